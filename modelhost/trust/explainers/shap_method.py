"""SHAP values of one explained function, with the exact explainer where there is one.

- ``tree``: ``shap.TreeExplainer`` for the tree models it reads (scikit-learn trees, forests
  and gradient boosting, XGBoost, LightGBM, CatBoost); it needs no background, and its
  expected value is the trees' own (the training data's mean output).
- ``linear``: ``shap.explainers.Linear`` for scikit-learn linear models (``coef_``), exact
  with features taken as independent; its expected value is the output at the background mean.
- ``kernel``: ``shap.KernelExplainer`` over the function for every other model; exact when it
  can enumerate every coalition (``n_samples`` of ``auto`` does for up to about 11
  features), an estimate beyond.

Every explanation keeps SHAP's identity: ``sum(shap_values) == prediction - expected_value``
for each output (to float precision; float32 for XGBoost).

One row's explanation::

    {"shap_values": [0.12, -0.4, ...],   # one per feature; [[...] per output] for k outputs
     "expected_value": 0.31,             # [k values] for k outputs
     "prediction": 0.03,                 # the explained output at this row, from the model
     "feature_names": ["f0", ...], "output": "predict", "explainer": "tree",
     "output_names": [...]}              # with k outputs, where the model names them
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from modelhost.trust.explainers.libraries import import_explainer_library
from modelhost.trust.explainers.target import ExplainedFunction, Rows

__all__ = ["ShapMethod"]


class ShapMethod:
    """SHAP for one function over one background; built once, used from any thread."""

    def __init__(
        self,
        function: ExplainedFunction,
        background: Rows,
        feature_names: tuple[str, ...],
        *,
        n_samples: int | None = None,
        link: str = "identity",
    ) -> None:
        self.function = function
        self.feature_names = feature_names
        self._n_samples: int | str = n_samples if n_samples else "auto"
        # Kernel SHAP keeps state on the explainer while it runs: one row set at a time.
        self._lock = threading.Lock()
        shap = import_explainer_library("shap")
        self.kind, self._explainer = _build(shap, function, background, link)

    def explain(self, rows: Rows) -> list[dict[str, Any]]:
        """One explanation per row (see the module's docstring for its shape)."""
        with self._lock:
            values, expected, per_row = self._values(rows)
        predictions = self.function.predict(rows)
        explanations = []
        for index in range(rows.shape[0]):
            row_values = values[index]  # (m,) or (m, k)
            explanation: dict[str, Any] = {
                "shap_values": _plain(row_values.T),
                "expected_value": _plain(expected[index] if per_row else expected),
                "prediction": _plain(predictions[index]),
                "feature_names": list(self.feature_names),
                "output": self.function.output,
                "explainer": self.kind,
            }
            if row_values.ndim == 2 and self.function.output_names is not None:
                explanation["output_names"] = list(self.function.output_names)
            explanations.append(explanation)
        return explanations

    def _values(self, rows: Rows) -> tuple[Rows, Rows, bool]:
        """SHAP values, (n, m) or (n, m, k); expected values, per row or for all; which."""
        explainer = self._explainer
        per_row = self.kind == "linear"
        if per_row:
            explained = explainer(rows)
            values, expected = explained.values, explained.base_values
        elif self.kind == "kernel":
            values = explainer.shap_values(rows, nsamples=self._n_samples, silent=True)
            expected = explainer.expected_value
        else:
            values, expected = explainer.shap_values(rows), explainer.expected_value
        values = np.asarray(values, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if values.ndim == 3 and values.shape[2] == 1:
            values = values[:, :, 0]
        if values.ndim == 2 and expected.ndim > int(per_row):
            expected = expected[..., 0]  # one output: (1,) → (), (n, 1) → (n,)
        return values, expected, per_row


def _build(shap: Any, function: ExplainedFunction, background: Rows, link: str) -> tuple[str, Any]:
    native = function.native
    if native is not None:
        if type(native).__module__.startswith("sklearn.linear_model") and hasattr(native, "coef_"):
            return "linear", shap.explainers.Linear(native, background)
        try:
            return "tree", shap.TreeExplainer(native)
        except Exception:  # SHAP's way of saying "not a tree model I know"
            pass
    return "kernel", shap.KernelExplainer(function.predict, background, link=link)


def _plain(value: Any) -> Any:
    """Numpy values as JSON's floats (one number, or nested lists)."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()
