"""``modelhost serve --explainer shap|lime``: v1 ``:explain`` for models with no explainer.

The server calls a :class:`ServedModelExplainer` (its ``ModelExplainer``) off the event
loop with the model and the v1 body, ``{"instances": [[...], ...]}``, and answers::

    {"explanations": [<one per instance>]}

each one as :mod:`~modelhost.trust.explainers.shap_method` (``shap_values``,
``expected_value``, ``prediction``, ...) or :mod:`~modelhost.trust.explainers.lime_method`
(``feature_weights``, ``intercept``, ...) describe. Each model object gets its explainer
once (a reloaded model gets a new one); each row's explanation is cached by its values.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.model.model import Model
from modelhost.model.payload import get_predict_input
from modelhost.trust.explainers.background import Background, load_background, zero_background
from modelhost.trust.explainers.cache import ExplanationCache, row_digest
from modelhost.trust.explainers.libraries import import_explainer_library
from modelhost.trust.explainers.lime_method import LimeMethod
from modelhost.trust.explainers.shap_method import ShapMethod
from modelhost.trust.explainers.target import ExplainedFunction, Rows, served_function

__all__ = ["EXPLAINERS", "ServedModelExplainer", "explainer_from_settings"]

EXPLAINERS = ("shap", "lime")

Method = ShapMethod | LimeMethod


@dataclass(frozen=True, slots=True)
class _ModelExplanations:
    """One model object's explainer, and the token its cached rows are filed under."""

    method: Method
    token: int
    width: int


class ServedModelExplainer:
    """Explains v1 requests to the server's models with SHAP or LIME (``method``)."""

    def __init__(
        self,
        method: str,
        background: Background | None = None,
        *,
        cache_size: int = 1024,
        n_samples: int | None = None,
    ) -> None:
        if method not in EXPLAINERS:
            raise errors.InvalidInput(f"--explainer takes shap or lime, not {method!r}.")
        import_explainer_library(method)  # fail at start, not on the first request
        self.method = method
        self.background = background
        self.n_samples = n_samples
        self.cache = ExplanationCache(cache_size)
        # Rows explained by the library (not answered from the cache).
        self.computed = 0
        self._models: weakref.WeakKeyDictionary[Model, _ModelExplanations] = (
            weakref.WeakKeyDictionary()
        )
        self._tokens = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, model: Model, payload: Any, headers: dict[str, str] | None) -> Any:
        rows = instances(payload)
        state = self._for_model(model, rows.shape[1])
        keys = [(state.token, row_digest(row)) for row in rows]
        explanations: list[Any] = [self.cache.get(key) for key in keys]
        missing = [i for i, found in enumerate(explanations) if found is None]
        if missing:
            computed = state.method.explain(rows[missing])
            with self._lock:
                self.computed += len(missing)
            for index, explanation in zip(missing, computed, strict=True):
                self.cache.put(keys[index], explanation)
                explanations[index] = explanation
        return {"explanations": explanations}

    def _for_model(self, model: Model, width: int) -> _ModelExplanations:
        with self._lock:
            state = self._models.get(model)
        if state is None:
            # Built outside the lock: a TreeExplainer takes a while to read a big forest.
            function = served_function(model)
            built = self._build(function, width)
            with self._lock:
                state = self._models.setdefault(
                    model, _ModelExplanations(built, next(self._tokens), width)
                )
        if state.width != width:
            raise errors.InvalidInput(
                f"The instances have {width} features; model {model.name}'s explainer "
                f"explains rows of {state.width}."
            )
        return state

    def _build(self, function: ExplainedFunction, width: int) -> Method:
        background = self.background or zero_background(width)
        if background.width != width:
            raise errors.InvalidInput(
                f"The explainer's background rows have {background.width} features; "
                f"the instances have {width}."
            )
        names = background.feature_names or function.feature_names
        if names is None or len(names) != width:
            names = tuple(f"f{i}" for i in range(width))
        if self.method == "shap":
            return ShapMethod(function, background.rows, names, n_samples=self.n_samples)
        return LimeMethod(function, background.rows, names, n_samples=self.n_samples)


def instances(payload: Any) -> Rows:
    """The v1 body's instances as float rows (n, m)."""
    if not isinstance(payload, dict):
        raise errors.InvalidInput('Explain takes a v1 body: {"instances": [[...], ...]}.')
    found = get_predict_input(payload)
    try:
        rows = np.asarray(found, dtype=np.float64)
    except (TypeError, ValueError):
        raise errors.InvalidInput("Explained instances must be rows of numbers.") from None
    if rows.ndim == 1:
        rows = rows.reshape(-1, 1)  # instances of one feature each
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise errors.InvalidInput(
            f"Explained instances must be a non-empty list of rows, not shape {list(rows.shape)}."
        )
    if not np.isfinite(rows).all():
        raise errors.InvalidInput("Explained instances must be finite numbers.")
    return rows


def explainer_from_settings(method: str, background_path: str = "") -> ServedModelExplainer | None:
    """The explainer ``--explainer``/``--explainer-background`` ask for; None without one."""
    if not method:
        if background_path:
            raise errors.InvalidInput("--explainer-background needs --explainer shap|lime.")
        return None
    background = load_background(background_path) if background_path else None
    return ServedModelExplainer(method, background)
