"""A model folder's ``model-settings.json``: the per-model settings served with it.

MLServer's file name and field names (``max_batch_size``, ``max_batch_time`` in seconds),
plus ``max_latency_ms``, so a model folder prepared for MLServer batches the same here.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelhost import errors
from modelhost.settings import BatchSettings

__all__ = ["FILE_NAME", "read_batching"]

FILE_NAME = "model-settings.json"


def read_batching(model_dir: Path) -> BatchSettings | None:
    """The batching the folder's settings file asks for, or None when it says nothing."""
    path = model_dir / FILE_NAME if model_dir.is_dir() else model_dir.with_name(FILE_NAME)
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise errors.ModelLoadError(f"Cannot read {path}: {exc}") from None
    if not isinstance(settings, dict) or "max_batch_size" not in settings:
        return None
    try:
        size = int(settings["max_batch_size"])
        if "max_latency_ms" in settings:
            latency_ms = float(settings["max_latency_ms"])
        else:
            latency_ms = float(settings.get("max_batch_time", 0.0)) * 1000.0
    except (TypeError, ValueError) as exc:
        raise errors.ModelLoadError(f"{path}: bad batching setting ({exc}).") from None
    if size < 0 or latency_ms < 0:
        raise errors.ModelLoadError(f"{path}: batching settings must not be negative.")
    return BatchSettings(max_batch_size=size, max_latency_ms=latency_ms)
