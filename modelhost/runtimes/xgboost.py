"""The XGBoost runtime: serves a ``Booster`` saved as JSON, UBJSON or ``.bst``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.model.model import Model
from modelhost.model.payload import get_predict_input, get_predict_response
from modelhost.runtimes._common import (
    import_framework,
    input_error,
    native_message,
    single_model_file,
)

__all__ = ["PATTERNS", "XGBoostModel"]

PATTERNS = ("*.json", "*.ubj", "*.bst")
# XGBoost picks the format from these extensions; any other it guesses at, with a warning.
_NAMED_FORMATS = (".json", ".ubj")


class XGBoostModel(Model):
    """An XGBoost ``Booster``; ``nthread`` threads per prediction (KServe's default: 1).

    The reply is what ``Booster.predict`` returns: class probabilities for
    ``multi:softprob``, a score per row for the other objectives.
    """

    def __init__(self, name: str, model_dir: str | Path, nthread: int = 1) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.nthread = nthread
        self._booster: Any = None
        self._xgb: Any = None
        self._outputs: list[dict[str, Any]] = []

    def load(self) -> bool:
        path = single_model_file(self.model_dir, PATTERNS, "xgboost")
        xgb = import_framework("xgboost", "xgboost")
        booster = xgb.Booster(params={"nthread": self.nthread})
        try:
            if path.suffix.lower() in _NAMED_FORMATS:
                booster.load_model(str(path))
            else:
                # From memory XGBoost tells JSON from UBJSON by content, and does not warn.
                booster.load_model(bytearray(path.read_bytes()))
        except Exception as exc:
            raise errors.ModelLoadError(f"Cannot load {path}: {native_message(exc)}") from exc
        self._xgb = xgb
        self._booster = booster
        self._outputs = _output_types(booster)
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
            # inplace_predict skips building a DMatrix; it takes arrays and DataFrames only.
            if isinstance(x, np.ndarray) or hasattr(x, "columns"):
                result = booster.inplace_predict(x)
            else:
                result = booster.predict(self._xgb.DMatrix(x, nthread=self.nthread))
        except (ValueError, TypeError) as exc:  # XGBoostError is a ValueError
            raise input_error(exc) from exc
        return get_predict_response(payload, result, self.name)

    def get_input_types(self) -> list[dict[str, Any]]:
        if self._booster is None:
            return []
        # XGBoost computes in float32 whatever it is sent.
        shape = [-1, int(self._booster.num_features())]
        return [{"name": "input-0", "datatype": "FP32", "shape": shape}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return list(self._outputs) if self._booster is not None else []

    @property
    def platform(self) -> str:
        return "xgboost"


def _output_types(booster: Any) -> list[dict[str, Any]]:
    learner = json.loads(booster.save_config()).get("learner", {})
    params = learner.get("learner_model_param", {})
    objective = learner.get("objective", {}).get("name", "")
    width = 1
    if objective == "multi:softprob":
        width = int(params.get("num_class", 1))
    elif int(params.get("num_target", 1)) > 1:
        width = int(params["num_target"])
    shape = [-1, width] if width > 1 else [-1]
    return [{"name": "output-0", "datatype": "FP32", "shape": shape}]
