"""KServe's v1 protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelhost import errors
from modelhost.protocol import v2_json
from modelhost.protocol.infer_type import InferResponse

__all__ = ["decode_request", "encode_response", "to_predictions"]


def decode_request(body: bytes) -> dict[str, Any]:
    """The request object; it must carry a list under ``instances`` or ``inputs``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidInput(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise errors.InvalidInput('Expected a JSON object with "instances" or "inputs".')
    return validate(parsed)


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` if it is a v1 request: a list of rows under ``instances`` or ``inputs``.

    Rows that are objects (named columns, read as a DataFrame) must all be objects.
    """
    key = "instances" if "instances" in payload else "inputs"
    if key not in payload:
        raise errors.InvalidInput('Expected "instances" or "inputs" in the request body.')
    rows = payload[key]
    if not isinstance(rows, list):
        raise errors.InvalidInput(f'Expected "{key}" to be a list.')
    if rows and isinstance(rows[0], dict) and not all(isinstance(row, dict) for row in rows):
        raise errors.InvalidInput(
            f'"{key}" mixes objects with other rows: send every row as an object of named '
            "values, or none."
        )
    return payload


def to_predictions(result: Any) -> Any:
    """What a v1 client receives for a model's result."""
    if isinstance(result, dict):
        return result
    if isinstance(result, InferResponse):
        values = {o.name: _plain(o.as_numpy()) for o in result.outputs}
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        return {"predictions": values}
    return {"predictions": _plain(result)}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == np.object_:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value.tolist()]
    return value


def encode_response(result: Any) -> bytes:
    try:
        return v2_json.dumps(to_predictions(result))
    except TypeError as exc:
        raise errors.InferenceError(f"Model result cannot be sent as JSON: {exc}") from None
