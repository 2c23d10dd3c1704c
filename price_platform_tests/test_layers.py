"""The import rules of the code base, read from the source with ``ast``.

1. Domain code does not know Dagster: outside ``price_platform/defs/`` and the entry points
   (``definitions.py``, ``launcher.py``, ``demo.py``, ``cli.py``, ``commands/``) no module imports
   ``dagster`` (or an integration) or ``price_platform.defs``.
2. The API does not know the orchestration: ``serving`` imports no Dagster code, no entry point.
3. The platform package reaches the API only from its entry points (``launcher`` creates the first key).
4. No import cycles among the modules as Python runs them (imports at module level; ``TYPE_CHECKING``
   blocks are for type checkers only and are left out).
5. The benchmarks share support code with the tests through ``price_platform.testing``, never by
   importing a test module.

Each rule is checked against a small module written to break it, so that the walk itself is tested.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("price_platform", "serving")
ENTRY_POINTS = (
    "price_platform.defs",
    "price_platform.definitions",
    "price_platform.launcher",
    "price_platform.demo",
    "price_platform.cli",
    "price_platform.commands",
)
DAGSTER = ("dagster", "dagster_dbt", "dagster_mlflow", "dagster_postgres", "dagster_webserver")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, module: str, *, top_level_only: bool) -> set[str]:
    """Every dotted name ``module`` imports (``from a import b`` gives ``a`` and ``a.b``).

    ``top_level_only`` keeps the imports Python runs when the module loads: statements at module
    level and in its ``try``/``if`` blocks, except ``if TYPE_CHECKING:``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    statements: list[ast.stmt] = []
    if top_level_only:
        pending = list(tree.body)
        while pending:
            statement = pending.pop()
            if isinstance(statement, ast.If):
                if not (isinstance(statement.test, ast.Name) and statement.test.id == "TYPE_CHECKING"):
                    pending += statement.body + statement.orelse
            elif isinstance(statement, ast.Try):
                pending += statement.body + statement.orelse + statement.finalbody
                pending += [line for handler in statement.handlers for line in handler.body]
            else:
                statements.append(statement)
    else:
        statements = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    names: set[str] = set()
    for statement in statements:
        if isinstance(statement, ast.Import):
            names |= {alias.name for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom):
            if statement.level:
                base = package.split(".")[: len(package.split(".")) - statement.level + 1]
                origin = ".".join(base + ([statement.module] if statement.module else []))
            else:
                origin = statement.module or ""
            names.add(origin)
            names |= {f"{origin}.{alias.name}" for alias in statement.names}
    return names


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {module_name(path, root): path for package in packages for path in (root / package).rglob("*.py")}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layer_violations(root: Path) -> list[str]:
    """Rules 1-3: each import that runs against the layers, as ``module -> imported name``."""
    found = []
    for module, path in sorted(modules(root).items()):
        names = imported_names(path, module, top_level_only=False)
        if within(module, ("serving",)):
            forbidden = DAGSTER + ENTRY_POINTS
        elif within(module, ENTRY_POINTS):
            continue
        else:
            forbidden = (*DAGSTER, "price_platform.defs", "serving")
        found += [f"{module} -> {name}" for name in sorted(names) if within(name, forbidden)]
    return found


def import_cycles(root: Path) -> list[list[str]]:
    """Rule 4: the strongly connected groups of more than one module in the load-time import graph."""
    paths = modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {
        module: {target for name in imported_names(path, module, top_level_only=True)
                 if (target := resolve(name)) and target != module}
        for module, path in paths.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def benchmark_test_imports(root: Path) -> list[str]:
    """Rule 5: each import of a test module by a benchmark."""
    return [
        f"{module} -> {name}"
        for module, path in sorted(modules(root, ("benchmarks",)).items())
        for name in sorted(imported_names(path, module, top_level_only=False))
        if within(name, ("price_platform_tests",))
    ]


def test_domain_code_and_the_api_import_no_orchestration() -> None:
    assert layer_violations(REPO) == []


def test_no_import_cycles() -> None:
    assert import_cycles(REPO) == []


def test_benchmarks_import_no_test_module() -> None:
    assert benchmark_test_imports(REPO) == []


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    """A tree that breaks every rule once."""
    files = {
        "price_platform/__init__.py": "",
        "price_platform/training/__init__.py": "",
        "price_platform/training/fit.py": "def f():\n    import dagster\n",
        "price_platform/defs/__init__.py": "import dagster\n",
        "price_platform/cycle_a.py": "from price_platform import cycle_b\n",
        "price_platform/cycle_b.py": "from .cycle_a import thing\n",
        "price_platform/typed_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from price_platform import typed_back\n",
        "price_platform/typed_back.py": "import price_platform.typed_only\n",
        "serving/__init__.py": "",
        "serving/app.py": "from price_platform.defs import assets\n",
        "benchmarks/__init__.py": "",
        "benchmarks/speed.py": "from price_platform_tests.conftest import free_port\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_walk_finds_each_broken_rule(broken_tree: Path) -> None:
    assert layer_violations(broken_tree) == [
        "price_platform.training.fit -> dagster",
        "serving.app -> price_platform.defs",
        "serving.app -> price_platform.defs.assets",
    ]
    assert import_cycles(broken_tree) == [["price_platform.cycle_a", "price_platform.cycle_b"]]
    assert benchmark_test_imports(broken_tree) == [
        "benchmarks.speed -> price_platform_tests.conftest",
        "benchmarks.speed -> price_platform_tests.conftest.free_port",
    ]
