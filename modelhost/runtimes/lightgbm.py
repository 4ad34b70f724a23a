"""The LightGBM runtime: serves a ``Booster`` saved as a text model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.runtimes._common import import_framework, single_model_file
from modelhost.runtimes._framework import FrameworkModel

__all__ = ["PATTERNS", "LightGBMModel"]

PATTERNS = ("*.txt",)


class LightGBMModel(FrameworkModel):
    """A LightGBM ``Booster``; ``nthread`` threads per prediction (KServe's default: 1).

    The reply is what ``Booster.predict`` returns: class probabilities for multiclass
    models, a score per row otherwise.
    """

    platform_name = "lightgbm"

    def __init__(self, name: str, model_dir: str | Path, nthread: int = 1) -> None:
        super().__init__(name, model_dir)
        self.nthread = nthread

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "lightgbm")
        lgb = import_framework("lightgbm", "lightgbm")
        try:
            booster = lgb.Booster(model_file=str(path))
        except Exception as exc:
            raise errors.ModelLoadError(f"Cannot load {path}: {exc}") from exc
        # LightGBM reports a wrong feature count as LightGBMError, not ValueError.
        self.input_errors = (ValueError, TypeError, lgb.basic.LightGBMError)
        self._estimator = booster
        self.ready = True
        return self.ready

    def _compute(self, estimator: Any, x: Any, payload: Any) -> Any:
        # Threads go here: Booster(params=...) ignores them for a model file, and warns.
        return estimator.predict(x, num_threads=self.nthread)

    def get_input_types(self) -> list[dict[str, Any]]:
        if self._estimator is None:
            return []
        shape = [-1, int(self._estimator.num_feature())]
        return [{"name": "input-0", "datatype": "FP64", "shape": shape}]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self._estimator is None:
            return []
        width = int(self._estimator.num_model_per_iteration())
        shape = [-1, width] if width > 1 else [-1]
        return [{"name": "output-0", "datatype": "FP64", "shape": shape}]
