"""The LightGBM runtime: serves a ``Booster`` saved as a text model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.model import Model
from modelhost.model.payload import get_predict_input, get_predict_response
from modelhost.runtimes._common import import_framework, input_error, single_model_file

__all__ = ["PATTERNS", "LightGBMModel"]

PATTERNS = ("*.txt",)


class LightGBMModel(Model):
    """A LightGBM ``Booster``; ``nthread`` threads per prediction (KServe's default: 1).

    The reply is what ``Booster.predict`` returns: class probabilities for multiclass
    models, a score per row otherwise.
    """

    def __init__(self, name: str, model_dir: str | Path, nthread: int = 1) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.nthread = nthread
        self._booster: Any = None
        self._input_errors: tuple[type[BaseException], ...] = (ValueError, TypeError)

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "lightgbm")
        lgb = import_framework("lightgbm", "lightgbm")
        try:
            booster = lgb.Booster(model_file=str(path))
        except Exception as exc:
            raise errors.ModelLoadError(f"Cannot load {path}: {exc}") from exc
        # LightGBM reports a wrong feature count as LightGBMError, not ValueError.
        self._input_errors = (ValueError, TypeError, lgb.basic.LightGBMError)
        self._booster = booster
        self.ready = True
        return self.ready

    def unload(self) -> None:
        self._booster = None
        super().unload()

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        booster = self._booster
        if booster is None:
            raise errors.ModelNotReady(self.name)
        x = get_predict_input(payload)
        try:
            # Threads go here: Booster(params=...) ignores them for a model file, and warns.
            result = booster.predict(x, num_threads=self.nthread)
        except self._input_errors as exc:
            raise input_error(exc) from exc
        return get_predict_response(payload, result, self.name)

    def get_input_types(self) -> list[dict[str, Any]]:
        if self._booster is None:
            return []
        shape = [-1, int(self._booster.num_feature())]
        return [{"name": "input-0", "datatype": "FP64", "shape": shape}]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self._booster is None:
            return []
        width = int(self._booster.num_model_per_iteration())
        shape = [-1, width] if width > 1 else [-1]
        return [{"name": "output-0", "datatype": "FP64", "shape": shape}]

    @property
    def platform(self) -> str:
        return "lightgbm"
