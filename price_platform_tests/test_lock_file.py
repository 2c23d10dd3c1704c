"""uv.lock is the environment: it matches pyproject.toml, and the running venv is exactly it.

The first check is the one .ci/run makes (`uv lock --check`); the second compares what is installed
(importlib.metadata) with what `uv export` says the lock installs on this platform for the dev and bench
extras, which is what `make install` syncs.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import uv
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("dev", "bench")
# Installed beside the lock on purpose: the venv's own installer (python -m venv seeds pip and setuptools,
# make install bootstraps uv with pip) and this project, which uv sync installs editable.
NOT_FROM_THE_LOCK = {"pip", "setuptools", "uv", "price-platform"}


def _uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs the venv's uv in cwd and returns its exit code and output."""
    return subprocess.run([uv.find_uv_bin(), *args], cwd=cwd, capture_output=True, text=True, check=False)


def _locked_versions() -> dict[str, str]:
    """The version the lock installs here of each package, by canonical name (markers evaluated for this machine)."""
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    export = _uv(
        "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header", "--no-annotate", *extras, cwd=REPO
    )
    assert export.returncode == 0, export.stderr
    versions = {}
    for line in export.stdout.splitlines():
        if not line.strip() or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (pin,) = requirement.specifier
            versions[canonicalize_name(requirement.name)] = pin.version
    return versions


def _installed_versions() -> dict[str, str]:
    """The version of each distribution installed in the running interpreter, by canonical name."""
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}


def test_lock_matches_pyproject() -> None:
    check = _uv("lock", "--check", cwd=REPO)
    assert check.returncode == 0, (
        "uv.lock does not match pyproject.toml: run `.venv/bin/uv lock` and commit uv.lock\n" + check.stderr
    )


def test_lock_check_fails_when_pyproject_drops_a_dependency(tmp_path: Path) -> None:
    """The check above can fail: a pyproject.toml without one of its dependencies no longer matches the lock."""
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    dependency = '    "pyyaml>=6",\n'
    assert dependency in text
    pyproject.write_text(text.replace(dependency, ""))

    check = _uv("lock", "--check", "--offline", "--verbose", cwd=tmp_path)

    # uv sees the mismatch before it resolves; whether the offline resolution then succeeds ("needs to be
    # updated") or stops for want of index metadata in a fresh cache, the check fails.
    assert check.returncode != 0
    assert "mismatched requirements for: `price-platform" in check.stderr
    assert (tmp_path / "uv.lock").read_bytes() == (REPO / "uv.lock").read_bytes()


def test_installed_environment_is_the_lock() -> None:
    locked = _locked_versions()
    installed = _installed_versions()
    assert "pandas" in locked and "pytest" in locked and "evidently" in locked

    differing = {name: (version, installed.get(name)) for name, version in locked.items() if installed.get(name) != version}
    extraneous = sorted(set(installed) - set(locked) - NOT_FROM_THE_LOCK)
    assert not differing and not extraneous, (
        "the venv is not uv.lock: run `make install` (or `.venv/bin/uv sync --frozen --extra dev --extra bench`)\n"
        f"locked version vs installed: {differing}\ninstalled but not locked: {extraneous}"
    )
