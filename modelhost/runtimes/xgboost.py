"""The XGBoost runtime: serves a ``Booster`` saved as JSON, UBJSON or ``.bst``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.runtimes._common import import_framework, native_message, single_model_file
from modelhost.runtimes._framework import FrameworkModel

__all__ = ["PATTERNS", "XGBoostModel"]

PATTERNS = ("*.json", "*.ubj", "*.bst")
# XGBoost picks the format from these extensions; any other it guesses at, with a warning.
_NAMED_FORMATS = (".json", ".ubj")


class XGBoostModel(FrameworkModel):
    """An XGBoost ``Booster``; ``nthread`` threads per prediction (KServe's default: 1).

    The reply is what ``Booster.predict`` returns: class probabilities for
    ``multi:softprob``, a score per row for the other objectives.
    """

    platform_name = "xgboost"

    def __init__(self, name: str, model_dir: str | Path, nthread: int = 1) -> None:
        super().__init__(name, model_dir)
        self.nthread = nthread
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
        self._estimator = booster
        self._outputs = _output_types(booster)
        self.ready = True
        return self.ready

    def _compute(self, estimator: Any, x: Any, payload: Any) -> Any:
        # inplace_predict skips building a DMatrix; it takes arrays and DataFrames only.
        # (XGBoostError, raised for a wrong feature count, is a ValueError.)
        if isinstance(x, np.ndarray) or hasattr(x, "columns"):
            return estimator.inplace_predict(x)
        return estimator.predict(self._xgb.DMatrix(x, nthread=self.nthread))

    def get_input_types(self) -> list[dict[str, Any]]:
        if self._estimator is None:
            return []
        # XGBoost computes in float32 whatever it is sent.
        shape = [-1, int(self._estimator.num_features())]
        return [{"name": "input-0", "datatype": "FP32", "shape": shape}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return list(self._outputs) if self._estimator is not None else []


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
