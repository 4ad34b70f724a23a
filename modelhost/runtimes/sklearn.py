"""The scikit-learn runtime: a joblib or pickle estimator, served with predict or predict_proba."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.model.payload import get_predict_response
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferResponse
from modelhost.runtimes._common import (
    PREDICT_PROBA,
    asks_for_proba,
    names_proba_output,
    single_model_file,
)
from modelhost.runtimes._framework import FrameworkModel

__all__ = ["PATTERNS", "PREDICT_PROBA", "SKLearnModel"]

PATTERNS = ("*.joblib", "*.pkl", "*.pickle")


class SKLearnModel(FrameworkModel):
    """A scikit-learn estimator (or pipeline) saved with joblib or pickle.

    ``predict`` calls the estimator's ``predict``, or ``predict_proba`` when the model was
    built with ``predict_proba=True`` or when the request asks for it:

    - v1: a top-level key next to the instances,
      ``{"instances": [[6.8, 2.8, 4.8, 1.4]], "predict_proba": true}``;
    - v2: the request parameter ``"parameters": {"predict_proba": true}``, or (as in
      MLServer) a requested output named ``predict_proba``, which then names the output.

    Loading unpickles the file, which runs code from it: serve only model files you trust.
    """

    platform_name = "sklearn"

    def __init__(self, name: str, model_dir: str | Path, predict_proba: bool = False) -> None:
        super().__init__(name, model_dir)
        self.predict_proba = predict_proba

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "sklearn")
        model = _unpickle(path)
        if not callable(getattr(model, "predict", None)):
            raise errors.ModelLoadError(f"{path} holds a {type(model).__name__}, not a model.")
        if self.predict_proba and not hasattr(model, PREDICT_PROBA):
            raise errors.ModelLoadError(
                f"predict_proba was asked for, but {type(model).__name__} in {path} has none."
            )
        self._estimator = model
        self.ready = True
        return self.ready

    def _compute(self, estimator: Any, x: Any, payload: Any) -> Any:
        if self.predict_proba or asks_for_proba(payload):
            if not hasattr(estimator, PREDICT_PROBA):
                raise errors.InvalidInput(
                    f"Model {self.name} ({type(estimator).__name__}) does not support "
                    "predict_proba."
                )
            return estimator.predict_proba(x)
        return estimator.predict(x)

    def _respond(self, payload: Any, result: Any) -> Any:
        response = get_predict_response(payload, result, self.name)
        if isinstance(response, InferResponse) and names_proba_output(payload):
            response.outputs[0].name = PREDICT_PROBA
        return response

    def get_input_types(self) -> list[dict[str, Any]]:
        n_features = getattr(self._estimator, "n_features_in_", None)
        if n_features is None:
            return []
        # scikit-learn computes in float64 whatever it is sent.
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, int(n_features)]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = getattr(self._estimator, "classes_", None)
        if classes is None:
            return []
        if self.predict_proba:
            return [{"name": "output-0", "datatype": "FP64", "shape": [-1, len(classes)]}]
        datatype = datatypes.datatype_of(np.asarray(classes))
        return [{"name": "output-0", "datatype": datatype, "shape": [-1]}]


def _unpickle(path: Path) -> Any:
    reader: Callable[[Path], Any]
    try:
        import joblib
    except ImportError:
        if path.suffix.lower() == ".joblib":
            raise errors.ModelLoadError(
                f"Loading {path} needs joblib: pip install 'modelhost[sklearn]'."
            ) from None
        reader = _pickle_load
    else:
        # joblib reads its own format and plain pickles alike, whatever the extension.
        reader = joblib.load
    try:
        return reader(path)
    except Exception as exc:
        raise _load_error(path, exc) from exc


def _pickle_load(path: Path) -> Any:
    with path.open("rb") as file:
        return pickle.load(file)


def _load_error(path: Path, exc: BaseException) -> errors.ModelLoadError:
    if isinstance(exc, ModuleNotFoundError):
        return errors.ModelLoadError(
            f"Cannot load {path}: it needs the module {exc.name!r}; "
            "pip install 'modelhost[sklearn]' or the package that provides it."
        )
    return errors.ModelLoadError(f"Cannot load {path}: {type(exc).__name__}: {exc}")
