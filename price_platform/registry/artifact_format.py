"""The serving artifact of a model version: no pickle anywhere on the load path.

A fitted pipeline is written as a folder of three kinds of files:

- ``booster-<n>.ubj``: each fitted XGBoost model in XGBoost's own UBJSON format (data only);
- ``pipeline.skops``: the rest of the pipeline (encoders, kernel ridge, the XGBoost wrappers
  without their boosters) in skops' format, which is loaded only when every type it names is a
  scikit-learn/numpy default or named by :func:`trusted_types`;
- ``layout.json``: the format's name and the booster files.

The folder is the ``data`` of an MLflow ``python_function`` model whose ``loader_module`` is
this module (so the MLflow UI shows a pyfunc flavour and ``mlflow.pyfunc.load_model`` goes
through the same safe loader). Models saved by the older cloudpickle format are refused with
:class:`UnsafeArtifactError`, never unpickled.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sklearn.base import BaseEstimator
from xgboost import XGBRegressor

from price_platform import modeling

# skops is imported where a file is written or read, not here: it builds its trusted-type table at
# import (seconds), and every Dagster process imports this module through the asset definitions.

FORMAT = "price-platform/skops+xgboost-ubj/1"
DATA_FOLDER = "serving"  # the MLflow model's data/<DATA_FOLDER>
PIPELINE_FILE = "pipeline.skops"
LAYOUT_FILE = "layout.json"
_BOOSTER_FILE = re.compile(r"^booster-[0-9]+\.ubj$")
#: Attribute naming, in the skops file, the booster file of a wrapper whose booster was taken out.
_BOOSTER_ATTRIBUTE = "_price_platform_booster_file"

#: Third-party types a serving artifact may name beyond skops' defaults (scikit-learn
#: estimators, numpy, scipy, builtins).
THIRD_PARTY_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.compose._column_transformer.make_column_selector",
    "sklearn.model_selection._split.KFold",  # the folds of the TargetEncoder's cross fitting
    "sklearn.utils._bunch.Bunch",
    "xgboost.sklearn.XGBRegressor",
)


def trusted_types() -> list[str]:
    """Every type ``pipeline.skops`` may name: :data:`THIRD_PARTY_TYPES` and the platform's own pieces.

    The platform's pieces are the public classes (estimators, and the encoder's column selector
    ``SkewedColumns``) and functions that :mod:`price_platform.modeling` defines (the code that
    builds pipelines). Anything else in the file refuses the artifact before any object is built.
    """
    own = [
        f"{modeling.__name__}.{name}"
        for name, value in vars(modeling).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == modeling.__name__
        and (isinstance(value, type) or inspect.isfunction(value))
    ]
    return sorted({*THIRD_PARTY_TYPES, *own})


class UnsafeArtifactError(RuntimeError):
    """A model artifact the platform will not load: a pickle, an unknown format or an untrusted type."""


def save_pipeline(pipeline: Any, folder: Path) -> Path:
    """Write ``pipeline`` to ``folder`` (created) in this format; return the folder.

    Raises :class:`UnsafeArtifactError` when the pipeline holds a type outside
    :func:`trusted_types`, so that nothing is registered that serving would refuse.
    """
    folder.mkdir(parents=True)
    skeleton = copy.deepcopy(pipeline)
    boosters = []
    for index, regressor in enumerate(_fitted_boosters(skeleton)):
        name = f"booster-{index}.ubj"
        regressor.save_model(folder / name)
        del regressor._Booster
        setattr(regressor, _BOOSTER_ATTRIBUTE, name)
        boosters.append(name)
    import skops.io

    skops.io.dump(skeleton, folder / PIPELINE_FILE)
    untrusted = _untrusted(folder / PIPELINE_FILE)
    if untrusted:
        raise UnsafeArtifactError(
            f"the pipeline holds types serving does not trust: {', '.join(untrusted)}"
            " (add them to price_platform.registry.artifact_format.THIRD_PARTY_TYPES only if they run no code on load)"
        )
    (folder / LAYOUT_FILE).write_text(json.dumps({"format": FORMAT, "pipeline": PIPELINE_FILE, "boosters": boosters}))
    return folder


def load_pipeline(folder: Path) -> Any:
    """The fitted pipeline saved by :func:`save_pipeline` in ``folder``; nothing is unpickled.

    Raises :class:`UnsafeArtifactError` for another format, an untrusted type or a booster
    file the layout does not list.
    """
    try:
        layout = json.loads((folder / LAYOUT_FILE).read_text())
    except (OSError, ValueError) as error:
        raise UnsafeArtifactError(f"{folder} is not a {FORMAT} artifact: {error}") from None
    if not isinstance(layout, dict) or layout.get("format") != FORMAT:
        raise UnsafeArtifactError(f"{folder} holds format {layout.get('format') if isinstance(layout, dict) else '?'!r}, not {FORMAT!r}")
    boosters = layout.get("boosters")
    if not isinstance(boosters, list) or not all(isinstance(n, str) and _BOOSTER_FILE.match(n) for n in boosters):
        raise UnsafeArtifactError(f"{folder}/{LAYOUT_FILE} lists booster files that are not booster-<n>.ubj")
    untrusted = _untrusted(folder / PIPELINE_FILE)
    if untrusted:
        raise UnsafeArtifactError(f"{folder}/{PIPELINE_FILE} names untrusted types: {', '.join(untrusted)}")
    import skops.io

    pipeline = skops.io.load(folder / PIPELINE_FILE, trusted=trusted_types())
    for regressor in _walk(pipeline):
        if isinstance(regressor, XGBRegressor) and hasattr(regressor, _BOOSTER_ATTRIBUTE):
            name = getattr(regressor, _BOOSTER_ATTRIBUTE)
            if name not in boosters:
                raise UnsafeArtifactError(f"{folder}/{PIPELINE_FILE} refers to booster {name!r} the layout does not list")
            delattr(regressor, _BOOSTER_ATTRIBUTE)
            regressor.load_model(folder / name)
    return pipeline


def refuse_other_formats(model_folder: Path, label: str) -> None:
    """Raise :class:`UnsafeArtifactError` unless the MLflow model in ``model_folder`` is in this format.

    Reads only the ``MLmodel`` YAML (safely). A version logged by the older scikit-learn
    flavour (cloudpickle) gets a message saying to retrain or re-register it.
    """
    try:
        document = yaml.safe_load((model_folder / "MLmodel").read_text(encoding="utf-8"))
        flavours = (document.get("flavors") if isinstance(document, dict) else None) or {}
    except (OSError, ValueError, yaml.YAMLError) as error:  # (ValueError: not UTF-8 text)
        raise UnsafeArtifactError(f"{label}: unreadable MLmodel file: {error}") from None
    if not isinstance(flavours, dict):
        raise UnsafeArtifactError(f"{label}: the MLmodel file's flavors are not a mapping")
    sklearn = flavours.get("sklearn") or {}
    pickled = sklearn.get("serialization_format") if isinstance(sklearn, dict) else None
    if pickled in {"pickle", "cloudpickle"} or (model_folder / "model.pkl").exists():
        raise UnsafeArtifactError(
            f"{label} is saved as a {pickled or 'pickle'} (loading it could run arbitrary code) and is refused:"
            " retrain it (price-platform materialize the training job) or re-register its pipeline"
            " with price_platform.registry.versions.register_candidate, then promote the new version"
        )
    pyfunc = flavours.get("python_function") or {}
    if not isinstance(pyfunc, dict) or pyfunc.get("loader_module") != __name__ or not (model_folder / "data" / DATA_FOLDER).is_dir():
        raise UnsafeArtifactError(
            f"{label} is not a {FORMAT} artifact (flavours: {', '.join(flavours) or 'none'}):"
            " retrain it or re-register it with price_platform.registry.versions.register_candidate"
        )


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` returns for this format: the pipeline's predict."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return self.pipeline.predict(model_input)


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """MLflow's ``loader_module`` hook (``mlflow.pyfunc.load_model``)."""
    return PyfuncModel(load_pipeline(Path(data_path)))


def _untrusted(path: Path) -> list[str]:
    import skops.io

    return sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted_types()))


def _fitted_boosters(root: Any) -> Iterator[XGBRegressor]:
    for found in _walk(root):
        if isinstance(found, XGBRegressor) and getattr(found, "_Booster", None) is not None:
            yield found


def _walk(root: Any) -> Iterator[Any]:
    """Every estimator reachable from ``root`` through attributes, lists, tuples and dicts, once each."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, BaseEstimator):
            yield item
            stack.extend(reversed(list(vars(item).values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
