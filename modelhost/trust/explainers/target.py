"""What an explanation explains: one numeric function of feature rows, and how to reach it.

For a served model of the tabular runtimes (sklearn, XGBoost, LightGBM, CatBoost) the
function is the framework model's own, called directly, and the native object goes to SHAP
(whose exact tree and linear explainers read it). The output explained is the one those
explainers are exact for, named in every explanation (``output``):

- scikit-learn regressors: ``predict``;
- scikit-learn classifiers: ``decision_function`` (log-odds) where the model has one
  (logistic regression, gradient boosting), else ``predict_proba`` (forests, trees);
- XGBoost boosters: ``margin`` (``output_margin=True``); LightGBM: ``raw_score``;
- any other model: its v1 ``predict`` over ``{"instances": rows}``, explained model-agnostically.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.model.model import Model
from modelhost.protocol.infer_type import InferResponse
from modelhost.runtimes._framework import FrameworkModel

__all__ = ["ExplainedFunction", "as_outputs", "served_function"]

Rows = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class ExplainedFunction:
    """``predict``: float rows (n, m) → outputs (n,) or (n, k); ``output`` names what it is."""

    predict: Callable[[Rows], Rows]
    output: str
    # The framework's model, for SHAP's exact explainers; None: model-agnostic only.
    native: Any = None
    output_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None


def served_function(model: Model) -> ExplainedFunction:
    """The function to explain for a model this server serves."""
    if isinstance(model, FrameworkModel):
        native = model.estimator
        if native is None:
            raise errors.ModelNotReady(model.name)
        return native_function(native)
    if type(model).predict is Model.predict:
        raise errors.Unsupported(
            f"Model {model.name} has no predict of its own (a transformer): nothing to explain."
        )

    def predict(rows: Rows) -> Rows:
        result = model.predict({"instances": rows.tolist()}, {})
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise errors.Unsupported(
                f"Model {model.name} predicts asynchronously; give it an explain of its own."
            )
        return as_outputs(result, model.name)

    return ExplainedFunction(predict, "predict")


def native_function(native: Any) -> ExplainedFunction:
    """The explained function of a framework's model object."""
    package = type(native).__module__.split(".")[0]
    if package == "xgboost" and hasattr(native, "get_booster"):
        native = native.get_booster()  # XGBoost's scikit-learn wrapper
    if package == "lightgbm" and hasattr(native, "booster_"):
        native = native.booster_
    if package == "xgboost":
        import xgboost

        def margin(rows: Rows) -> Rows:
            return np.asarray(
                native.predict(xgboost.DMatrix(rows), output_margin=True), dtype=np.float64
            )

        return ExplainedFunction(margin, "margin", native)
    if package == "lightgbm":

        def raw_score(rows: Rows) -> Rows:
            return np.asarray(native.predict(rows, raw_score=True), dtype=np.float64)

        return ExplainedFunction(raw_score, "raw_score", native)
    names = getattr(native, "feature_names_in_", None)
    feature_names = tuple(str(n) for n in names) if names is not None else None
    classes = getattr(native, "classes_", None)
    if classes is not None and hasattr(native, "predict_proba"):
        output = "decision_function" if hasattr(native, "decision_function") else "predict_proba"
        method = getattr(native, output)
        class_names = tuple(str(c) for c in classes)
        # A binary decision function has one column: the second class's log-odds.
        width = len(class_names) if output == "predict_proba" or len(class_names) > 2 else 1
        return ExplainedFunction(
            _floats(method),
            output,
            native,
            class_names if width > 1 else None,
            feature_names,
        )
    if not callable(getattr(native, "predict", None)):
        raise errors.Unsupported(f"{type(native).__name__} has no predict to explain.")
    return ExplainedFunction(_floats(native.predict), "predict", native, None, feature_names)


def _floats(method: Callable[[Rows], Any]) -> Callable[[Rows], Rows]:
    def call(rows: Rows) -> Rows:
        return np.asarray(method(rows), dtype=np.float64)

    return call


def as_outputs(result: Any, model_name: str) -> Rows:
    """A model's answer (v1 dict, v2 response, list or array) as float outputs (n,) or (n, k)."""
    if isinstance(result, InferResponse):
        if not result.outputs:
            raise errors.InferenceError(f"Model {model_name} answered no outputs.")
        result = result.outputs[0].as_numpy()
    elif isinstance(result, dict):
        if "predictions" not in result:
            raise errors.InferenceError(f"Model {model_name} answered no predictions.")
        result = result["predictions"]
    try:
        outputs = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError):
        raise errors.InferenceError(
            f"Model {model_name} answers non-numeric predictions; they cannot be explained."
        ) from None
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    if outputs.ndim not in (1, 2):
        raise errors.InferenceError(
            f"Model {model_name} answers outputs of shape {list(outputs.shape)}; "
            "one number or one vector per row can be explained."
        )
    return outputs
