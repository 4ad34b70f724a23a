"""From a request payload to a model's input, and from its result back to a reply.

A runtime's ``predict`` receives a v1 ``dict`` or a v2 ``InferRequest``. These two
helpers (KServe's ``get_predict_input`` / ``get_predict_response``) let it handle both
the same way: one numpy array in, and a reply of the request's own protocol out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import InferOutput, InferRequest, InferResponse

__all__ = ["get_predict_input", "get_predict_response"]


def get_predict_input(payload: dict[str, Any] | InferRequest) -> Any:
    """The model input: v1 ``instances``/``inputs`` as an array, v2's first input tensor.

    A v2 request with the ``content_type: "pd"`` parameter becomes a DataFrame with one
    column per input, as in KServe.
    """
    if isinstance(payload, InferRequest):
        if payload.parameters.get("content_type") == "pd":
            return payload.as_dataframe()
        if not payload.inputs:
            raise errors.InvalidInput("The request has no inputs.")
        return payload.inputs[0].as_numpy()
    if isinstance(payload, dict):
        instances = payload.get("instances", payload.get("inputs"))
        if instances is None:
            raise errors.InvalidInput('Expected "instances" or "inputs" in the request.')
        if instances and isinstance(instances[0], dict):
            try:
                import pandas as pd
            except ImportError:  # pragma: no cover - depends on the environment
                raise errors.Unsupported("Dict instances need pandas installed.") from None
            return pd.DataFrame(instances)
        if instances and isinstance(instances[0], str):
            return instances
        try:
            return np.asarray(instances)
        except ValueError as exc:
            raise errors.InvalidInput(f"Instances do not form an array: {exc}") from None
    raise errors.InvalidInput(f"Unsupported payload type {type(payload).__name__}.")


def get_predict_response(
    payload: dict[str, Any] | InferRequest, result: Any, model_name: str
) -> dict[str, Any] | InferResponse:
    """``result`` as a v1 ``{"predictions": ...}`` or a v2 ``InferResponse``."""
    if isinstance(payload, InferRequest):
        array = _as_array(result)
        output = InferOutput("output-0", list(array.shape), datatypes.datatype_of(array))
        output.set_data_from_numpy(array)
        return InferResponse(
            payload.id, model_name, [output], use_binary_outputs=payload.use_binary_outputs
        )
    if isinstance(result, np.ndarray):
        return {"predictions": result.tolist()}
    return {"predictions": result}


def _as_array(result: Any) -> npt.NDArray[Any]:
    if hasattr(result, "to_numpy"):  # pandas objects, without importing pandas
        result = result.to_numpy()
    array = np.asarray(result)
    if array.dtype.kind in ("U", "S"):
        array = array.astype(np.object_)
    return array
