"""Build or buy: the champion compiled by hand (``serving.blend``) beside ONNX Runtime, Treelite/tl2cgen and scikit-learn.

One run fits the platform's default champion as :mod:`benchmarks.serving` does (the kernel ridge
+ XGBoost blend, default settings) and prices the same records, one at a time and 1,000 at a
time, on one thread, with:

* ``sklearn``: ``pipeline.predict`` on a DataFrame (what the fallback
  :class:`serving.fast_path.PipelinePredictor` does);
* ``handwritten``: the hand-written compiled path, :class:`serving.blend.CompiledBlend`
  (encoder tables, kernel ridge as its quadratic form, the trees by ``booster.inplace_predict``),
  on this thread (below the two-thread split of :meth:`~serving.blend.CompiledBlend.predict`);
* ``onnx`` and ``tl2cgen``: the same, with the trees evaluated by ONNX Runtime (the booster
  converted by ``onnxmltools``, one intra-op thread) or by the shared library Treelite's
  ``tl2cgen`` generates and gcc compiles. Neither can express the rest of the pipeline:
  ``skl2onnx.convert_sklearn`` converts the imputer + scaler, one-hot and target-encoder
  blocks but refuses the derived features, the ``log1p`` of the non-negative part (a
  ``FunctionTransformer`` other than the identity), the ordered scores, kernel ridge and the
  banded target (no converter; the run prints each refusal), and Treelite compiles tree
  ensembles only. So each keeps the hand-written encoder and kernel ridge and
  replaces the part it can express.

Latencies are medians of interleaved rounds (the host's speed drifts; each engine is timed
between the others): wall clock (``*_ms``) and this thread's CPU time (``*_cpu_ms``; every engine
runs on the calling thread, and on a loaded host the CPU time is the steadier of the two).
``*_max_rel_diff`` is the largest relative difference of an
engine's prices from ``pipeline.predict`` on the 1,000 records (the serving gate,
``serving.model_store.AGREEMENT``, is 1e-6). Also the trees alone (the one member all engines
express) on the encoded records, and how long each engine takes to build from the fitted booster.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import Result
from benchmarks.serving import request_records, training_split

COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks serving_compilers"
#: Interleaved rounds per latency figure (1,000-record and one-record calls).
BATCH_ROUNDS = 15
ONE_ROW_ROUNDS = 300
#: The serving gate on agreement with ``pipeline.predict`` (``serving.model_store.AGREEMENT``).
AGREEMENT = 1e-6

Engine = Callable[[np.ndarray], np.ndarray]


def run() -> list[Result]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-compilers-") as folder:
        return _run(Path(folder))


def _run(folder: Path) -> list[Result]:
    import pandas as pd

    from price_platform.datasets import load_dataset
    from price_platform.settings import DEFAULT_DATASET, Settings
    from price_platform.training.candidate import fit_candidate
    from serving.blend import CompiledBlend
    from serving.fast_path import compile_pipeline

    spec = load_dataset(DEFAULT_DATASET)
    settings = Settings()
    data = training_split(spec, settings)
    pipeline = fit_candidate(spec, data, {}, coverage=settings.interval_coverage, seed=settings.seed, threads=1,
                             parallel_trees=settings.parallel_trees).pipeline
    compiled = compile_pipeline(pipeline, spec.features)
    if not isinstance(compiled, CompiledBlend):
        raise RuntimeError(f"the champion compiled to {type(compiled).__name__}, not the blend")
    print(f"skl2onnx, step by step: {whole_pipeline_to_onnx(pipeline, spec)}", flush=True)

    records = request_records(spec, data.holdout)
    rows = [tuple(record[name] for name in spec.features) for record in records]
    frame = pd.DataFrame.from_records(rows, columns=spec.features)
    expected = np.asarray(pipeline.predict(frame), dtype=np.float64)

    build: dict[str, float] = {}
    engines: dict[str, Engine] = {"handwritten": xgboost_trees(compiled)}
    started = time.perf_counter()
    engines["onnx"] = onnx_trees(compiled)
    build["onnx"] = time.perf_counter() - started
    started = time.perf_counter()
    engines["tl2cgen"] = tl2cgen_trees(compiled, folder)
    build["tl2cgen"] = time.perf_counter() - started
    print(f"built the trees: ONNX Runtime in {build['onnx']:.1f} s, tl2cgen (gcc) in {build['tl2cgen']:.1f} s", flush=True)

    def blend_with(trees: Engine) -> Callable[[list[tuple[Any, ...]]], np.ndarray]:
        def predict(batch: list[tuple[Any, ...]]) -> np.ndarray:
            kernel_columns, tree_columns = compiled.member_columns(batch)
            return compiled.blended(compiled.kernel_output(kernel_columns), trees(np.ascontiguousarray(tree_columns, dtype=np.float32)))

        return predict

    predictors: dict[str, Callable[[list[tuple[Any, ...]]], np.ndarray]] = {
        "sklearn": lambda batch: pipeline.predict(pd.DataFrame.from_records(batch, columns=spec.features)),
        **{name: blend_with(trees) for name, trees in engines.items()},
    }
    differences = {name: worst_relative(np.asarray(predict(rows), dtype=np.float64), expected)
                   for name, predict in predictors.items()}
    one_row_differences = {name: worst_relative(np.array([predict([row])[0] for row in rows[:200]]), expected[:200])
                           for name, predict in predictors.items() if name != "sklearn"}

    encoded_trees = np.ascontiguousarray(compiled.member_columns(rows)[1], dtype=np.float32)
    one_tree_row = encoded_trees[:1].copy()
    latency = {
        ("blend", "1000"): rounds({name: (lambda p=p: p(rows)) for name, p in predictors.items()}, BATCH_ROUNDS),
        ("blend", "1"): rounds({name: (lambda p=p: p(rows[:1])) for name, p in predictors.items()}, ONE_ROW_ROUNDS),
        ("trees", "1000"): rounds({name: (lambda e=e: e(encoded_trees)) for name, e in engines.items()}, BATCH_ROUNDS),
        ("trees", "1"): rounds({name: (lambda e=e: e(one_tree_row)) for name, e in engines.items()}, ONE_ROW_ROUNDS),
    }
    for (what, size), figures in latency.items():
        print(f"{what} x {size}: " + ", ".join(f"{name} {wall * 1e3:.3f} ms ({cpu * 1e3:.3f} ms CPU)"
                                              for name, (wall, cpu) in figures.items()), flush=True)
    print("max relative difference from pipeline.predict (1,000 records): "
          + ", ".join(f"{name} {value:.2e}" for name, value in differences.items())
          + "; one record at a time: " + ", ".join(f"{name} {value:.2e}" for name, value in one_row_differences.items()),
          flush=True)
    return results(latency, differences, one_row_differences, build)


def results(latency: dict[tuple[str, str], dict[str, tuple[float, float]]], differences: dict[str, float],
            one_row_differences: dict[str, float], build: dict[str, float]) -> list[Result]:
    """The figures: latencies and CPU times in ms, the hand-written path's margins over the others, agreement, build times."""
    figures: list[Result] = []
    for (what, size), by_engine in latency.items():
        label = "1row" if size == "1" else "1000rows"
        for name, (wall, cpu) in by_engine.items():
            figures.append(Result(f"compilers_{what}_{name}_{label}_ms", wall * 1e3, "ms", "reported (wall p50)", True, COMMAND))
            figures.append(Result(f"compilers_{what}_{name}_{label}_cpu_ms", cpu * 1e3, "ms", "reported (CPU p50)", True, COMMAND))
        mine_wall, mine_cpu = by_engine["handwritten"]
        for name, (wall, cpu) in by_engine.items():
            if name != "handwritten":
                for kind, ratio in (("", wall / mine_wall), ("_cpu", cpu / mine_cpu)):
                    figures.append(Result(f"compilers_{what}_{name}_vs_handwritten_{label}{kind}", ratio, "ratio",
                                          "> 1: the hand-written path is faster", ratio > 1, COMMAND))
    for name, value in differences.items():
        figures.append(Result(f"compilers_{name}_max_rel_diff", value, "ratio", f"<= {AGREEMENT:g} (serving gate)",
                              value <= AGREEMENT, COMMAND))
    for name, value in one_row_differences.items():
        figures.append(Result(f"compilers_{name}_max_rel_diff_one_row", value, "ratio", f"<= {AGREEMENT:g} (serving gate)",
                              value <= AGREEMENT, COMMAND))
    for name, seconds in build.items():
        figures.append(Result(f"compilers_{name}_build_seconds", seconds, "s", "reported", True, COMMAND))
    return figures


def rounds(functions: dict[str, Callable[[], Any]], count: int) -> dict[str, tuple[float, float]]:
    """(median wall time, median CPU time of this thread) of each function over ``count`` rounds.

    Each round calls all of them in turn (after one untimed call each). Every engine here runs
    on the calling thread, so its thread's CPU time is its whole cost: on a loaded host it
    moves far less than the wall time, which includes the waits for a core.
    """
    for function in functions.values():
        function()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in functions}
    for _ in range(count):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            function()
            times[name].append((time.perf_counter() - wall, time.thread_time() - cpu))
    return {name: (float(np.median([w for w, _ in values])), float(np.median([c for _, c in values])))
            for name, values in times.items()}


def worst_relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected) / np.abs(expected)))


def xgboost_trees(compiled: Any) -> Engine:
    """The hand-written path's trees: the fitted booster's ``inplace_predict`` (one thread)."""

    def trees(matrix: np.ndarray) -> np.ndarray:
        return compiled.booster.inplace_predict(matrix, iteration_range=compiled.iteration_range, missing=np.nan,
                                                validate_features=False)

    return trees


def plain_booster(compiled: Any) -> Any:
    """The booster without feature names (the converters want XGBoost's own ``f0, f1, ...``)."""
    booster = compiled.booster[compiled.iteration_range[0] : compiled.iteration_range[1]]
    booster.feature_names = None
    booster.feature_types = None
    return booster


def onnx_trees(compiled: Any) -> Engine:
    """The booster converted to an ONNX ``TreeEnsembleRegressor`` by onnxmltools, run by ONNX Runtime on one thread."""
    import onnxruntime
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = convert_xgboost(plain_booster(compiled), initial_types=[("x", FloatTensorType([None, len(compiled.tree_columns)]))],
                            target_opset=15)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def trees(matrix: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": matrix})[0].reshape(-1)

    return trees


def tl2cgen_trees(compiled: Any, folder: Path) -> Engine:
    """The booster as C code from Treelite's tl2cgen, compiled by gcc into a shared library, on one thread."""
    import tl2cgen
    import treelite

    model = treelite.frontend.from_xgboost(plain_booster(compiled))
    library = folder / "trees.so"
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(library), params={"parallel_comp": 4}, nthread=1)
    predictor = tl2cgen.Predictor(str(library), nthread=1)

    def trees(matrix: np.ndarray) -> np.ndarray:
        return predictor.predict(tl2cgen.DMatrix(matrix, dtype="float32", missing=np.nan)).reshape(-1)

    return trees


def whole_pipeline_to_onnx(pipeline: Any, spec: Any) -> str:
    """Which steps of the fitted pipeline ``skl2onnx.convert_sklearn`` converts, and its refusal of the others."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    def refusal(step: Any, columns: list[str]) -> str | None:
        inputs = [(name, StringTensorType([None, 1]) if name in spec.categorical else FloatTensorType([None, 1]))
                  for name in columns]
        try:
            convert_sklearn(step, initial_types=inputs, target_opset=15)
        except Exception as error:  # noqa: BLE001 (the refusal is the finding: reported, not raised)
            return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        return None

    steps = dict(pipeline.steps)
    encode, model = steps["encode"], steps["model"]
    found = {"derive": refusal(steps["derive"], list(spec.features)) if "derive" in steps else None}
    for name, transformer, columns in encode.transformers_:
        if transformer != "drop":
            found[f"encode.{name}"] = refusal(transformer, list(columns))
    blend = getattr(model, "regressor_", model)
    for name, member in zip([name for name, _ in blend.estimators], blend.estimators_, strict=True):
        found[f"member {name}"] = refusal(member.steps[-1][1], ["x"])
    found[f"target ({type(model).__name__})"] = refusal(model, list(spec.features))
    converted = [name for name, error in found.items() if error is None]
    refused = [f"{name} ({error})" for name, error in found.items() if error is not None]
    return f"converts {', '.join(converted) or 'nothing'}; refuses " + "; ".join(refused)
