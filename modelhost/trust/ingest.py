"""Turns logged inference payloads into rows: KServe's logger CloudEvents and TrustyAI's uploads.

Column names follow TrustyAI: a v2 tensor with one value per row is a column named after the
tensor; a tensor of shape ``[rows, k]`` is ``k`` columns ``<name>-0`` … ``<name>-<k-1>``. A v1
``instances`` row of ``k`` values gives ``inputs-0`` … and ``predictions`` give ``outputs-0``
(or ``outputs`` when each prediction is one value). A request and its response share
``ce-id``; whichever comes first waits (in a bounded buffer) for the other.
"""

from __future__ import annotations

import base64
import functools
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson

from modelhost import errors
from modelhost.trust.store import UNLABELED_TAG, InferenceBatch

__all__ = [
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "LoggedPayload",
    "OneRow",
    "PairingBuffer",
    "decode_cloudevent",
    "decode_consumer_payload",
    "decode_upload",
    "exchange_batch",
    "one_row",
    "parse_exchange",
    "tensor_columns",
]

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

Columns = dict[str, list[Any]]


@dataclass(frozen=True, slots=True)
class LoggedPayload:
    """One half of an inference: its id, model, whether it is the request, and its columns."""

    payload_id: str
    model_id: str
    is_request: bool
    columns: Columns
    rows: int


# What a stored value may be (type() is checked, not isinstance: one set lookup per value,
# done in C by map). The one-row path's decoder types (``_Tensor``) are the same four.
_SCALARS = frozenset({int, float, str, bool})
_SIZES = frozenset({int})


def _flatten(data: list[Any]) -> list[Any]:
    """Nested rows' values, in order."""
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def tensor_columns(tensors: Any, where: str) -> tuple[Columns, int]:
    """Columns from v2 tensors (``inputs`` or ``outputs``), and how many rows they hold."""
    if not isinstance(tensors, list) or not tensors:
        raise errors.InvalidInput(f"{where} must be a non-empty list of tensors.")
    columns: Columns = {}
    rows: int | None = None
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise errors.InvalidInput(f"{where}[{index}] must be an object.")
        name, shape = tensor.get("name"), tensor.get("shape")
        if not isinstance(name, str) or not name:
            raise errors.InvalidInput(f"{where}[{index}].name must be a non-empty string.")
        if (
            type(shape) is not list
            or not shape
            or not set(map(type, shape)) <= _SIZES
            or min(shape) < 0
        ):
            raise errors.InvalidInput(f"{where}[{index}].shape must be a list of sizes.")
        values = tensor.get("data")
        if not isinstance(values, list):
            raise errors.InvalidInput(f"Tensor data must be a list, not {type(values).__name__}.")
        # The values' types, once: every tensor the one-row path declined passes here.
        kinds = set(map(type, values))
        if list in kinds:  # nested rows: flattened, then looked at again
            values = _flatten(values)
            kinds = set(map(type, values))
        width = 1
        for size in shape[1:]:
            width *= size
        if len(values) != shape[0] * width:
            raise errors.InvalidInput(
                f"{where}[{index}] ({name!r}) has {len(values)} values for shape {shape}."
            )
        if not kinds <= _SCALARS:
            odd = next(iter(kinds - _SCALARS))
            raise errors.InvalidInput(
                f"{where}[{index}] ({name!r}) holds a {odd.__name__}; "
                "numbers, strings and booleans are stored."
            )
        if rows is not None and rows != shape[0]:
            raise errors.InvalidInput(
                f"{where}[{index}] ({name!r}) has {shape[0]} rows, the tensors before it {rows}."
            )
        rows = shape[0]
        if width == 1:
            _add(columns, name, values, where)
        else:
            for k, column in enumerate(_column_names(name, width)):
                _add(columns, column, values[k::width], where)
    return columns, rows or 0


@functools.lru_cache(maxsize=1024)
def _column_names(name: str, width: int) -> tuple[str, ...]:
    return tuple(f"{name}-{k}" for k in range(width))


def _add(columns: Columns, name: str, values: list[Any], where: str) -> None:
    if name in columns:
        raise errors.InvalidInput(f"{where} names column {name!r} twice.")
    columns[name] = values


def _v1_columns(rows: Any, prefix: str, where: str) -> tuple[Columns, int]:
    if not isinstance(rows, list) or not rows:
        raise errors.InvalidInput(f"{where} must be a non-empty list.")
    if all(isinstance(row, list) for row in rows):
        width = len(rows[0])
        if width == 0 or any(len(row) != width for row in rows):
            raise errors.InvalidInput(f"Every row of {where} must have the same, non-zero length.")
        tensor: dict[str, Any] = {"name": prefix, "shape": [len(rows), width], "data": rows}
    else:
        tensor = {"name": prefix, "shape": [len(rows)], "data": rows}
    return tensor_columns([tensor], where)


def decode_body(body: Any, is_request: bool) -> tuple[Columns, int]:
    """Columns of a v2 (``inputs``/``outputs``) or v1 (``instances``/``predictions``) body."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("A logged payload must be a JSON object.")
    if is_request:
        if "inputs" in body:
            return tensor_columns(body["inputs"], "inputs")
        if "instances" in body:
            return _v1_columns(body["instances"], "inputs", "instances")
        raise errors.InvalidInput('A logged request needs "inputs" (v2) or "instances" (v1).')
    if "outputs" in body:
        return tensor_columns(body["outputs"], "outputs")
    if "predictions" in body:
        return _v1_columns(body["predictions"], "outputs", "predictions")
    raise errors.InvalidInput('A logged response needs "outputs" (v2) or "predictions" (v1).')


def _model_from_source(source: str) -> str:
    # KServe's v1 response events carry io.kserve.inference.<model>.
    prefix = "io.kserve.inference."
    return source[len(prefix) :] if source.startswith(prefix) else ""


def decode_cloudevent(attributes: Mapping[str, Any], data: Any) -> LoggedPayload:
    """One logged half from a CloudEvent's attributes (``ce-`` stripped) and its JSON data."""
    event_type = attributes.get("type")
    if event_type not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise errors.InvalidInput(
            f"CloudEvent type {event_type!r} is neither {REQUEST_TYPE} nor {RESPONSE_TYPE}."
        )
    event_id = attributes.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise errors.InvalidInput("CloudEvent has no id (ce-id pairs a request and response).")
    model = (
        attributes.get("inferenceservicename")
        or attributes.get("modelid")
        or _model_from_source(str(attributes.get("source", "")))
    )
    if not isinstance(model, str) or not model:
        raise errors.InvalidInput(
            f"CloudEvent {event_id!r} names no model (ce-inferenceservicename)."
        )
    is_request = event_type == REQUEST_TYPE
    columns, rows = decode_body(data, is_request)
    return LoggedPayload(event_id, model, is_request, columns, rows)


def parse_exchange(request_id: str, request: bytes, response: bytes) -> tuple[Any, Any]:
    """An exchange's request and response bodies, parsed (``InvalidInput`` if not JSON)."""
    try:
        return orjson.loads(request), orjson.loads(response)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidInput(f"Inference {request_id!r} is not JSON: {exc}.") from None


def exchange_batch(
    model_id: str, request_id: str, request_data: Any, response_data: Any
) -> InferenceBatch:
    """The rows of one exchange whose bodies are parsed, any shape (see :func:`one_row`)."""
    inputs, rows = decode_body(request_data, True)
    outputs, out_rows = decode_body(response_data, False)
    if rows != out_rows:
        raise errors.InvalidInput(
            f"Inference {request_id!r} has {rows} request rows and {out_rows} response rows."
        )
    return InferenceBatch(model_id, inputs, outputs, _row_ids(request_id, rows))


class OneRow(NamedTuple):
    """A one-row exchange as its stored row: its columns' names and its values in order."""

    model_id: str
    request_id: str
    # (input column names, output column names): rows with the same layout store together.
    layout: tuple[tuple[str, ...], tuple[str, ...]]
    values: list[Any]

    def batch(self) -> InferenceBatch:
        inputs, outputs = self.layout
        split = len(inputs)
        return InferenceBatch(
            self.model_id,
            {name: [value] for name, value in zip(inputs, self.values[:split], strict=True)},
            {name: [value] for name, value in zip(outputs, self.values[split:], strict=True)},
            [self.request_id],
        )


# orjson reads a JSON integer past 64 bits as a float, msgspec as a Python int (which the
# store's orjson could not write): the one-row path takes 64-bit signed integers only.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _Tensor(msgspec.Struct):
    """A v2 tensor as the one-row path reads it: other fields are not read."""

    name: str
    shape: list[_Int64]
    data: list[float | _Int64 | bool | str]


class _Request(msgspec.Struct):
    inputs: list[_Tensor]


class _Response(msgspec.Struct):
    outputs: list[_Tensor]


_read_request = msgspec.json.Decoder(_Request)
_read_response = msgspec.json.Decoder(_Response)


def one_row(model_id: str, request_id: str, request: bytes, response: bytes) -> OneRow | None:
    """A v2 exchange of one row, as the row it stores; None for anything else.

    The payload logger's rows are almost all this shape (one inference a request). The
    general path (:func:`parse_exchange`, then :func:`exchange_batch`) parses each body into
    dicts and lists, turns tensors into columns, which the store then turns back into rows:
    a few microseconds a row of Python. Here both bodies are decoded by msgspec straight
    into the few fields a row needs, typed as they are read, and each tensor's values are
    taken as they come. It accepts only what the general path would store the same (every
    tensor a flat list of scalars, one row, no column named twice, values orjson reads
    alike); on anything else, errors included, the general path decides.
    """
    try:
        inputs = _read_request.decode(request).inputs
        outputs = _read_response.decode(response).outputs
    except msgspec.DecodeError:  # a validation error too: the general path says which
        return None
    request_row = _tensors_row(inputs)
    if request_row is None:
        return None
    response_row = _tensors_row(outputs)
    if response_row is None:
        return None
    layout = (request_row[0], response_row[0])
    return OneRow(model_id, request_id, layout, request_row[1] + response_row[1])


def _tensors_row(tensors: list[_Tensor]) -> tuple[tuple[str, ...], list[Any]] | None:
    if not tensors:
        return None
    names: tuple[str, ...] = ()
    values: list[Any] = []
    for tensor in tensors:
        shape, data = tensor.shape, tensor.data
        if not tensor.name or not shape or shape[0] != 1 or min(shape) < 0:
            return None
        sizes = tuple(shape)
        if len(data) != math.prod(sizes):
            return None
        names += _tensor_names(tensor.name, sizes)
        values = values + data if values else data
    if len(tensors) > 1 and len(set(names)) != len(names):
        return None  # a column named twice: the general path says so
    return names, values


@functools.lru_cache(maxsize=1024)
def _tensor_names(name: str, sizes: tuple[int, ...]) -> tuple[str, ...]:
    """The columns of one row of a tensor: its name, or ``<name>-<k>`` for each value."""
    width = math.prod(sizes[1:])
    return (name,) if width == 1 else _column_names(name, width)


def decode_consumer_payload(body: Any) -> LoggedPayload:
    """TrustyAI's ``/consumer/kserve/v2`` payload: ``{modelid, kind, id, data}``.

    ``data`` is the v2 JSON body, as an object or base64-encoded JSON (TrustyAI's ModelMesh
    payload processor sends base64 of the gRPC message; that binary form is not read here).
    """
    if not isinstance(body, dict):
        raise errors.InvalidInput("The consumer payload must be a JSON object.")
    model, kind, payload_id = body.get("modelid"), body.get("kind"), body.get("id")
    if not isinstance(model, str) or not model:
        raise errors.InvalidInput("The consumer payload's modelid must be a non-empty string.")
    if kind not in ("request", "response"):
        raise errors.InvalidInput('The consumer payload\'s kind must be "request" or "response".')
    if not isinstance(payload_id, str) or not payload_id:
        raise errors.InvalidInput("The consumer payload's id must be a non-empty string.")
    data = body.get("data")
    if isinstance(data, str):
        try:
            data = orjson.loads(base64.b64decode(data, validate=True))
        except (ValueError, orjson.JSONDecodeError):  # binascii.Error is a ValueError
            raise errors.InvalidInput(
                "The consumer payload's data is neither a JSON object nor base64 of one."
            ) from None
    columns, rows = decode_body(data, kind == "request")
    return LoggedPayload(payload_id, model, kind == "request", columns, rows)


def decode_upload(body: Any) -> InferenceBatch:
    """TrustyAI's ``/data/upload``: ``{model_name, data_tag, request, response}``."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("The upload must be a JSON object.")
    model = body.get("model_name")
    if not isinstance(model, str) or not model:
        raise errors.InvalidInput("model_name must be a non-empty string.")
    tag = body.get("data_tag", UNLABELED_TAG)
    if not isinstance(tag, str) or not tag:
        raise errors.InvalidInput("data_tag must be a non-empty string.")
    if tag.startswith("_trustyai") and tag != UNLABELED_TAG:
        raise errors.InvalidInput(f"data_tag {tag!r} is reserved (tags starting _trustyai).")
    request, response = body.get("request"), body.get("response")
    inputs, rows = decode_body(request, True)
    outputs, out_rows = decode_body(response, False)
    if rows != out_rows:
        raise errors.InvalidInput(f"The upload's request has {rows} rows, its response {out_rows}.")
    ids = [f"upload-{i}" for i in range(rows)]
    return InferenceBatch(model, inputs, outputs, ids, tag)


class PairingBuffer:
    """Holds one half of each inference until the other half arrives (oldest dropped first)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._waiting: OrderedDict[tuple[str, str], LoggedPayload] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, half: LoggedPayload) -> InferenceBatch | None:
        """The paired batch when ``half`` completes one, else None (``half`` waits)."""
        key = (half.model_id, half.payload_id)
        other = self._waiting.get(key)
        if other is None or other.is_request == half.is_request:
            self._waiting[key] = half
            self._waiting.move_to_end(key)
            while len(self._waiting) > self._capacity:
                self._waiting.popitem(last=False)
                self.dropped += 1
            return None
        del self._waiting[key]
        request, response = (half, other) if half.is_request else (other, half)
        if request.rows != response.rows:
            raise errors.InvalidInput(
                f"Inference {half.payload_id!r} has {request.rows} request rows and "
                f"{response.rows} response rows."
            )
        ids = _row_ids(half.payload_id, request.rows)
        return InferenceBatch(half.model_id, request.columns, response.columns, ids)


def _row_ids(payload_id: str, rows: int) -> Sequence[str]:
    return [payload_id] if rows == 1 else [f"{payload_id}-{i}" for i in range(rows)]
