"""LIME explanations of one explained function (``lime.lime_tabular.LimeTabularExplainer``).

LIME samples rows around the explained one (each feature perturbed with the background's
spread; one unit with the zero background), asks the model for them, and fits a weighted
ridge regression on the features standardised by that spread. Each output is explained on
its own (the model is asked once: every output sees the same samples). Sampling is seeded
per row, so the same row gets the same explanation in every process.

One row's explanation::

    {"feature_weights": [0.8, -0.1, ...],  # one per feature, per standardised unit;
                                           # [[...] per output] for k outputs
     "intercept": 0.4,                     # the local model's; [k values] for k outputs
     "local_prediction": 0.93,             # the local model's output at the row
     "prediction": 0.95,                   # the model's output at the row
     "score": 0.97,                        # R² of the local model on the samples
     "feature_names": ["f0", ...], "output": "predict_proba", "explainer": "lime",
     "output_names": [...]}                # with k outputs, where the model names them
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from modelhost.trust.explainers.libraries import import_explainer_library
from modelhost.trust.explainers.target import ExplainedFunction, Rows

__all__ = ["DEFAULT_LIME_SAMPLES", "LimeMethod"]

DEFAULT_LIME_SAMPLES = 5000
_SEED = 0


class LimeMethod:
    """LIME for one function over one background; used from any thread."""

    def __init__(
        self,
        function: ExplainedFunction,
        background: Rows,
        feature_names: tuple[str, ...],
        *,
        n_samples: int | None = None,
    ) -> None:
        self.function = function
        self.feature_names = feature_names
        self.n_samples = n_samples or DEFAULT_LIME_SAMPLES
        lime_tabular = import_explainer_library("lime")
        self._explainer = lime_tabular.LimeTabularExplainer(
            background,
            mode="regression",
            feature_names=list(feature_names),
            discretize_continuous=False,
            sample_around_instance=True,
            feature_selection="none",
            random_state=_SEED,
        )
        # The explainer draws from its own random state: one row at a time, reseeded.
        self._lock = threading.Lock()

    def explain(self, rows: Rows) -> list[dict[str, Any]]:
        """One explanation per row (see the module's docstring for its shape)."""
        predictions = self.function.predict(rows)
        return [self._explain_row(row, predictions[i]) for i, row in enumerate(rows)]

    def _explain_row(self, row: Rows, prediction: Rows) -> dict[str, Any]:
        outputs = _SameSamples(self.function.predict)
        width = 1 if np.ndim(prediction) == 0 else int(np.shape(prediction)[0])
        weights, intercepts, local, scores = [], [], [], []
        with self._lock:
            for output in range(width):
                self._explainer.random_state = np.random.RandomState(_SEED)
                found = self._explainer.explain_instance(
                    row,
                    outputs.column(output if width > 1 else None),
                    num_features=len(self.feature_names),
                    num_samples=self.n_samples,
                )
                by_feature = dict(found.local_exp[1])
                weights.append([float(by_feature.get(i, 0.0)) for i in range(len(row))])
                intercepts.append(float(found.intercept[1]))
                local.append(float(np.ravel(found.local_pred)[0]))
                scores.append(float(found.score))
        one = width == 1
        explanation: dict[str, Any] = {
            "feature_weights": weights[0] if one else weights,
            "intercept": intercepts[0] if one else intercepts,
            "local_prediction": local[0] if one else local,
            "prediction": float(prediction) if one else [float(p) for p in prediction],
            "score": scores[0] if one else scores,
            "feature_names": list(self.feature_names),
            "output": self.function.output,
            "explainer": "lime",
        }
        if not one and self.function.output_names is not None:
            explanation["output_names"] = list(self.function.output_names)
        return explanation


class _SameSamples:
    """The model asked once for LIME's samples of one row, whichever output is explained."""

    def __init__(self, predict: Any) -> None:
        self._predict = predict
        self._asked: Rows | None = None
        self._answer: Rows | None = None

    def column(self, output: int | None) -> Any:
        def predict(samples: Rows) -> Rows:
            if self._asked is None or not np.array_equal(self._asked, samples):
                self._asked, self._answer = samples.copy(), self._predict(samples)
            assert self._answer is not None
            return self._answer if output is None else self._answer[:, output]

        return predict
