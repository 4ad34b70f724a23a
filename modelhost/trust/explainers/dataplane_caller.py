"""How ``modelhost serve --trust`` reaches its models to explain them: through its data plane.

On a plain model server the explained model is in the same process. The rows a local
explainer makes up go to it as one v2 ``FP64`` tensor through :meth:`DataPlane.infer`, the
path a REST or gRPC request takes after decoding (input checks, batching, the model's
thread), with no HTTP hop and nothing counted among the server's requests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelhost import errors
from modelhost.protocol.infer_type import InferInput, InferRequest
from modelhost.server.dataplane import DataPlane
from modelhost.trust.explainers.caller import ModelTarget

__all__ = ["DataPlaneModelCaller"]


class DataPlaneModelCaller:
    """The trust app's :class:`~modelhost.trust.explainers.caller.ModelCaller` in a server."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    async def __call__(
        self, model: ModelTarget, inputs: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        rows = np.ascontiguousarray(inputs, dtype=np.float64)
        tensor = InferInput(model.input_name, rows.shape, "FP64", rows)
        # TrustyAI's ``version`` describes the model; the platform's caller ignores it too.
        request = InferRequest(model.name, [tensor])
        response = await self._dataplane.infer(request, {})
        if not response.outputs:
            raise errors.InferenceError(f"Model {model.name} answered no outputs.")
        answered: np.ndarray[Any, Any] = np.asarray(
            response.outputs[0].as_numpy(), dtype=np.float64
        )
        return answered
