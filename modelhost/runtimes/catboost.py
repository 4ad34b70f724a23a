"""The CatBoost runtime: a classifier or regressor saved with ``save_model`` (``.cbm``).

The file is loaded as a plain ``catboost.CatBoost``, whatever class saved it; a model
that knows class labels (or has a classification loss) is a classifier. Each request is
rows of the model's numeric features, ``[n, features]``, and is answered with:

- a classifier's predicted labels, ``[n]`` (``prediction_type="Class"``), or its class
  probabilities, FP64 ``[n, classes]``, when the model was built with
  ``predict_proba=True`` or the request asks for them as in the scikit-learn runtime (v1
  ``"predict_proba": true`` next to the instances; v2 the ``predict_proba`` parameter, or
  a requested output of that name);
- a regressor's raw values, FP64 ``[n]`` (``[n, targets]`` for a multi-target loss).

``nthread`` threads per prediction (default 1). Models with categorical or text features
are not served here: a request is one numeric tensor.
"""

from __future__ import annotations

import re
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
    import_framework,
    names_proba_output,
    single_model_file,
)
from modelhost.runtimes._framework import FrameworkModel

__all__ = ["PATTERNS", "PREDICT_PROBA", "CatBoostModel"]

PATTERNS = ("*.cbm",)

# Losses of classifiers, for a model saved without its class labels.
_CLASSIFICATION_LOSSES = frozenset({"Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll"})
# CatBoost prefixes its messages with the C++ source: "catboost/libs/data/x.cpp:72: ".
_NATIVE_PREFIX = re.compile(r"^\S+\.(?:cpp|h|pyx):\d+: ")


class CatBoostModel(FrameworkModel):
    """A CatBoost model from a ``.cbm`` file (see the module's notes)."""

    platform_name = "catboost"

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        predict_proba: bool = False,
        nthread: int = 1,
    ) -> None:
        super().__init__(name, model_dir)
        self.predict_proba = predict_proba
        self.nthread = nthread
        self._catboost_error: type[Exception] = Exception
        self._classes: np.ndarray[Any, Any] = np.empty(0)
        self._is_classifier = False
        self._n_features = 0
        self._targets = 1

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "catboost")
        catboost = import_framework("catboost", "catboost")
        model = catboost.CatBoost()
        try:
            model.load_model(str(path), format="cbm")
        except Exception as exc:
            raise errors.ModelLoadError(f"Cannot load {path}: {_message(exc)}") from exc
        classes = np.asarray(model.classes_ if model.classes_ is not None else [])
        loss = str(model.get_all_params().get("loss_function", ""))
        self._is_classifier = classes.size > 0 or loss in _CLASSIFICATION_LOSSES
        if self.predict_proba and not self._is_classifier:
            raise errors.ModelLoadError(
                f"predict_proba was asked for, but {path} holds a regressor ({loss})."
            )
        # The bias is a list for a model of several outputs (multi-target regression).
        bias = model.get_scale_and_bias()[1]
        self._targets = len(bias) if isinstance(bias, list) else 1
        # n_features_in_ reads 0 on a loaded model; the feature names are always there.
        self._n_features = len(model.feature_names_)
        self._classes = classes
        self._catboost_error = catboost.CatBoostError
        self._estimator = model
        self.ready = True
        return self.ready

    def _compute(self, estimator: Any, x: Any, payload: Any) -> Any:
        proba = self.predict_proba or asks_for_proba(payload)
        if proba and not self._is_classifier:
            raise errors.InvalidInput(f"Model {self.name} is a regressor: it has no predict_proba.")
        self._check_rows(x)
        if proba:
            prediction_type = "Probability"
        else:
            prediction_type = "Class" if self._is_classifier else "RawFormulaVal"
        try:
            result = estimator.predict(
                x, prediction_type=prediction_type, thread_count=self.nthread
            )
        except self._catboost_error as exc:
            raise errors.InvalidInput(_message(exc)) from exc
        if prediction_type == "Class" and result.ndim == 2 and result.shape[1] == 1:
            # Multiclass labels come as a column; binary ones, and sklearn's, as a vector.
            result = result[:, 0]
        return result

    def _check_rows(self, x: Any) -> None:
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self._n_features:
            sent = list(shape) if shape is not None else f"a {type(x).__name__}"
            raise errors.InvalidInput(
                f"Model {self.name} takes rows of {self._n_features} features, shape "
                f"[n, {self._n_features}]; the request sends {sent}."
            )

    def _respond(self, payload: Any, result: Any) -> Any:
        response = get_predict_response(payload, result, self.name)
        if isinstance(response, InferResponse) and names_proba_output(payload):
            response.outputs[0].name = PREDICT_PROBA
        return response

    def get_input_types(self) -> list[dict[str, Any]]:
        if self._estimator is None:
            return []
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self._n_features]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self._estimator is None:
            return []
        if self.predict_proba:
            shape = [-1, len(self._classes)]
            return [{"name": "output-0", "datatype": "FP64", "shape": shape}]
        if self._is_classifier and self._classes.size:
            datatype = datatypes.datatype_of(self._classes)
            return [{"name": "output-0", "datatype": datatype, "shape": [-1]}]
        if self._is_classifier:
            return []
        shape = [-1, self._targets] if self._targets > 1 else [-1]
        return [{"name": "output-0", "datatype": "FP64", "shape": shape}]


def _message(exc: BaseException) -> str:
    return _NATIVE_PREFIX.sub("", str(exc).strip()) or type(exc).__name__
