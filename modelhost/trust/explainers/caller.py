"""How the trust service reaches a model to explain it: a :class:`ModelCaller`.

TrustyAI's local explainers name the model (``config.model``: its ``target``, ``name`` and
``version``); the service hosting the trust app implements the call (the embedded platform
calls the InferenceService's replicas, ``modelhost.local.trust_host``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["ModelCaller", "ModelTarget"]


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """The model a request names: ``name`` is the stored model id (the service's name)."""

    name: str
    target: str = ""
    version: str | None = None
    # The v2 input tensor the stored input columns came from (``input-0-0`` ... → input-0).
    input_name: str = "input-0"


class ModelCaller(Protocol):
    """Asks a model for its outputs: rows (n, m) of float64 → outputs (n,) or (n, k).

    Raises :class:`~modelhost.errors.ModelNotFound` for a model it cannot reach by that name.
    """

    async def __call__(
        self, model: ModelTarget, inputs: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]: ...
