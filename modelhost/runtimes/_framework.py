"""``FrameworkModel``: what the sklearn, XGBoost and LightGBM runtimes share.

Each loads one estimator; ``predict`` turns the payload into an array, asks the
subclass to compute, maps the framework's input errors to 400s and answers in the
request's protocol. A subclass writes only ``load``, ``_compute`` and its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.model import Model
from modelhost.model.payload import get_predict_input, get_predict_response
from modelhost.runtimes._common import input_error

__all__ = ["FrameworkModel"]


class FrameworkModel(Model):
    # The framework's exceptions that mean "bad input" (a 400), not "model failed".
    input_errors: tuple[type[BaseException], ...] = (ValueError, TypeError)
    platform_name = ""

    def __init__(self, name: str, model_dir: str | Path) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self._estimator: Any = None

    @property
    def estimator(self) -> Any:
        """The framework's own model object (None until loaded): what explainers look into."""
        return self._estimator

    def unload(self) -> None:
        self._estimator = None
        super().unload()

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        estimator = self._serving()
        if estimator is None:
            raise errors.ModelNotReady(self.name)
        x = get_predict_input(payload)
        try:
            result = self._compute(estimator, x, payload)
        except self.input_errors as exc:
            raise input_error(exc) from exc
        return self._respond(payload, result)

    def _serving(self) -> Any:
        """What ``_compute`` is given: the estimator, or a runtime's own faster form of it."""
        return self._estimator

    def _compute(self, estimator: Any, x: Any, payload: Any) -> Any:
        raise NotImplementedError

    def _respond(self, payload: Any, result: Any) -> Any:
        return get_predict_response(payload, result, self.name)

    @property
    def platform(self) -> str:
        return self.platform_name
