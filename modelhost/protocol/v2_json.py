"""Open Inference Protocol v2 over REST: JSON bodies and the binary tensor data extension.

Decoding validates the request against the protocol with msgspec (fast, and its errors
name the offending field); tensors become numpy arrays at once, binary ones as
zero-copy views of the body. Encoding writes numpy arrays with orjson directly.

JSON ``data`` is typed by the tensor's ``datatype`` in the same pass (a tagged union on
it): numbers for the integer and float types (integers only for INT and UINT; ``null``
is NaN for FP16/FP32/FP64, as in MLServer), ``true``/``false`` for BOOL, strings for
BYTES, flat or nested up to ``MAX_NESTING`` levels. So ``true`` in FP64 data or
``"a"`` in BOOL data is a 400 naming the element, not a silent 1.0 or True.
Parameters of a request are strings, numbers or booleans, as in the protocol (and as
gRPC's ``InferParameter`` can carry).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from modelhost import errors
from modelhost.protocol import datatypes
from modelhost.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

__all__ = [
    "HEADER_LENGTH",
    "MAX_NESTING",
    "decode_load_parameters",
    "decode_raw_request",
    "decode_ready_only",
    "decode_request",
    "decode_response",
    "decode_unload_parameters",
    "dumps",
    "encode_request",
    "encode_response",
    "request_to_dict",
    "response_to_dict",
]

HEADER_LENGTH = "inference-header-content-length"
# Levels of nested lists a tensor's JSON data may have (numpy allows 64 dimensions).
MAX_NESTING = 32

_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

# A request's parameter values: the protocol's string | number | boolean.
_Scalar = bool | int | float | str


def _nested(element: Any) -> Any:
    """A list of ``element`` or of such lists, ``MAX_NESTING`` levels deep at most.

    msgspec has no recursive aliases before Python 3.12: the levels are spelled out.
    """
    kind: Any = list[element]
    for _ in range(MAX_NESTING - 1):
        kind = list[element | kind]
    return kind


_FLOATS = _nested(float | None)
_INTEGERS = _nested(int)
_ELEMENTS: dict[str, Any] = {
    "BOOL": _nested(bool),
    "BYTES": _nested(str),
    **{t: _INTEGERS for t in datatypes.DATATYPES if t.startswith(("INT", "UINT"))},
    **{t: _FLOATS for t in datatypes.DATATYPES if t.startswith(("FP", "BF"))},
}


class _Tensor(msgspec.Struct, tag_field="datatype"):
    """A tensor's JSON object; one subclass per datatype, tagged by it, types ``data``."""

    name: str
    shape: list[int]
    data: Any = None
    parameters: dict[str, Any] | None = None


def _tensor_types(parameters: Any) -> Any:
    """The union of one tagged tensor type per datatype, with ``parameters`` typed so."""
    variants = tuple(
        msgspec.defstruct(
            f"_{datatype}",
            [("data", _ELEMENTS[datatype] | None, None), ("parameters", parameters, None)],
            bases=(_Tensor,),
            tag=datatype,
        )
        for datatype in sorted(datatypes.DATATYPES)
    )
    return functools.reduce(operator.or_, variants)


# Built at import, so mypy sees only Any: hence the ignores where they are used.
_RequestTensor = _tensor_types(dict[str, _Scalar] | None)
# Lenient: another server's response parameters may hold objects (MLServer's headers).
_ResponseTensor = _tensor_types(dict[str, Any] | None)


class _Requested(msgspec.Struct):
    name: str
    parameters: dict[str, _Scalar] | None = None


class _Request(msgspec.Struct):
    inputs: list[_RequestTensor]  # type: ignore[valid-type]
    id: str | None = None
    parameters: dict[str, _Scalar] | None = None
    outputs: list[_Requested] | None = None


class _Response(msgspec.Struct):
    model_name: str
    outputs: list[_ResponseTensor]  # type: ignore[valid-type]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None


# The repository extension's bodies, all optional; a field of another type is a 400.
class _IndexOptions(msgspec.Struct, forbid_unknown_fields=True):
    ready: bool = False


class _ModelOptions(msgspec.Struct, forbid_unknown_fields=True):
    parameters: dict[str, _Scalar] = {}


_request_decoder = msgspec.json.Decoder(_Request)
_response_decoder = msgspec.json.Decoder(_Response)
_index_decoder = msgspec.json.Decoder(_IndexOptions)
_model_options_decoder = msgspec.json.Decoder(_ModelOptions)


def dumps(obj: Any) -> bytes:
    """JSON-encode ``obj``; numpy arrays and scalars are written natively."""
    return orjson.dumps(obj, option=_ORJSON_OPTIONS)


def decode_request(
    body: bytes,
    header_length: int | None,
    model_name: str,
    model_version: str | None = None,
) -> InferRequest:
    """A v2 request from its body; ``header_length`` is the binary extension's header."""
    json_part, binary = _split_body(body, header_length)
    try:
        parsed = _request_decoder.decode(json_part)
    except msgspec.ValidationError as exc:
        raise _invalid("inference request", exc) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidInput(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec stops at Python's recursion limit: the client's nesting, not our fault.
        raise errors.InvalidInput("Request JSON is nested too deeply.") from None
    inputs = _tensors(parsed.inputs, binary, "inputs", InferInput)
    outputs = (
        [RequestedOutput(o.name, o.parameters) for o in parsed.outputs]
        if parsed.outputs is not None
        else None
    )
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=parsed.id,
        parameters=parsed.parameters,
        request_outputs=outputs,
        model_version=model_version,
    )


def decode_raw_request(
    body: bytes, input_metadata: list[dict[str, Any]], model_name: str
) -> InferRequest:
    """The binary extension's raw form: the whole body is the single input's bytes."""
    if _is_json_request(body):
        raise errors.InvalidInput(
            "Inference-Header-Content-Length: 0 says the whole body is the raw bytes of the "
            "model's one input, but the body is a JSON inference request; send it without "
            "the header, or with the length of its JSON."
        )
    if len(input_metadata) != 1:
        raise errors.InvalidInput(
            "A raw binary body (Inference-Header-Content-Length: 0) needs a model with "
            f"exactly one declared input; {model_name} declares {len(input_metadata)}."
        )
    meta = input_metadata[0]
    datatype = str(meta["datatype"])
    shape = [int(d) for d in meta.get("shape", [-1])]
    if datatype == "BYTES":
        shape = [1]
    else:
        wire = 2 if datatype == "BF16" else datatypes.numpy_dtype(datatype).itemsize
        known = datatypes.element_count([d for d in shape if d >= 0])
        variable = [i for i, d in enumerate(shape) if d < 0]
        if len(variable) > 1:
            raise errors.InvalidInput(
                f"A raw binary body needs at most one variable dimension; {shape} has more."
            )
        if variable:
            if known == 0 or len(body) % (known * wire):
                raise errors.InvalidInput(
                    f"Raw body of {len(body)} bytes does not fit shape {shape} of {datatype}."
                )
            shape[variable[0]] = len(body) // (known * wire)
    tensor = InferInput(str(meta["name"]), shape, datatype)
    tensor.data = datatypes.from_bytes(datatype, shape, body)
    request = InferRequest(model_name=model_name, infer_inputs=[tensor])
    request.raw_binary_body = True
    return request


def decode_ready_only(body: bytes) -> bool:
    """The repository index's ``{"ready": bool}`` (an empty body: all models)."""
    return _decode_options(body, _index_decoder, _IndexOptions(), "repository index request").ready


def decode_load_parameters(body: bytes) -> dict[str, Any]:
    """A repository load's ``{"parameters": {...}}`` (an empty body: none)."""
    options = _decode_options(body, _model_options_decoder, _ModelOptions(), "load request")
    return dict(options.parameters)


def decode_unload_parameters(body: bytes) -> dict[str, Any]:
    """A repository unload's ``{"parameters": {...}}`` (``unload_dependents``, ...)."""
    options = _decode_options(body, _model_options_decoder, _ModelOptions(), "unload request")
    return dict(options.parameters)


_Options = TypeVar("_Options", bound=msgspec.Struct)


def _decode_options(
    body: bytes, decoder: msgspec.json.Decoder[_Options], empty: _Options, what: str
) -> _Options:
    if not body.strip():
        return empty
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise errors.InvalidInput(f"Invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidInput(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise errors.InvalidInput("Request JSON is nested too deeply.") from None


def _is_json_request(body: bytes) -> bool:
    """Whether a body is v2 JSON (no run of raw tensor bytes parses as one)."""
    if body[:64].lstrip()[:1] != b"{":
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and "inputs" in parsed


def decode_response(body: bytes, header_length: int | None) -> InferResponse:
    """A v2 response from its body (used by clients, transformers and tests)."""
    json_part, binary = _split_body(body, header_length)
    try:
        parsed = _response_decoder.decode(json_part)
    except msgspec.ValidationError as exc:
        raise _invalid("inference response", exc) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidInput(f"Invalid inference response: {exc}") from None
    outputs = _tensors(parsed.outputs, binary, "outputs", InferOutput)
    return InferResponse(
        parsed.id, parsed.model_name, outputs, parsed.model_version, parameters=parsed.parameters
    )


# Said after a data element of the wrong JSON type, which msgspec names by its path.
_DATA_RULE = (
    "Tensor data holds numbers for FP16, FP32 and FP64 (null is NaN), integers for the INT "
    "and UINT types, true or false for BOOL, strings for BYTES"
)


def _invalid(what: str, exc: msgspec.ValidationError) -> errors.InvalidInput:
    text = str(exc)
    if "].data" not in text:
        return errors.InvalidInput(f"Invalid {what}: {text}")
    if "got `array`" in text:
        return errors.InvalidInput(
            f"Invalid {what}: tensor data is nested too deeply (at most {MAX_NESTING} "
            f"levels): {text}"
        )
    return errors.InvalidInput(f"Invalid {what}: {text}. {_DATA_RULE}.")


def _split_body(body: bytes, header_length: int | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    if header_length < 0 or header_length > len(body):
        raise errors.InvalidInput(
            f"Inference-Header-Content-Length {header_length} does not fit a body of "
            f"{len(body)} bytes."
        )
    view = memoryview(body)
    return bytes(view[:header_length]), view[header_length:]


def _tensors(
    parsed: list[_Tensor],
    binary: memoryview,
    where: str,
    kind: type[InferInput] | type[InferOutput],
) -> list[Any]:
    tensors = []
    offset = 0
    for index, item in enumerate(parsed):
        datatype = str(item.__struct_config__.tag)
        shape = item.shape
        if shape and min(shape) < 0:
            raise errors.InvalidInput(
                f"{where}[{index}].shape: dimensions must be >= 0, got {item.shape}."
            )
        size = None
        parameters = item.parameters
        if parameters:
            parameters = dict(parameters)
            size = parameters.pop("binary_data_size", None)
        tensor = kind(item.name, shape, datatype, parameters=parameters or None)
        if size is not None:
            field = f"{where}[{index}]"
            if item.data is not None:
                raise errors.InvalidInput(f"{field}: has both data and binary_data_size.")
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise errors.InvalidInput(
                    f"{field}.parameters.binary_data_size {size!r} does not fit the "
                    f"{len(binary)} binary bytes after the JSON header."
                )
            tensor.data = datatypes.from_bytes(datatype, item.shape, binary[offset : offset + size])
            offset += size
        else:
            if item.data is None:
                raise errors.InvalidInput(
                    f"{where}[{index}]: has neither data nor binary_data_size."
                )
            if datatype == "BF16":
                raise errors.InvalidInput(
                    f"{where}[{index}]: BF16 tensors must use the binary tensor data extension."
                )
            tensor.data = item.data
            tensor.as_numpy()  # validates datatype and element count now, as a 400
        tensors.append(tensor)
    if offset != len(binary):
        raise errors.InvalidInput(
            f"{len(binary) - offset} bytes after the JSON header belong to no tensor."
        )
    return tensors


def _binary_choice(response: InferResponse, request: InferRequest | None) -> dict[str, bool]:
    default = bool(request.use_binary_outputs) if request is not None else False
    default = default or response.use_binary_outputs
    choice: dict[str, bool] = {}
    requested = request.request_outputs if request is not None else None
    per_output = {r.name: r.binary_data for r in requested or () if r.binary_data is not None}
    for tensor in response.outputs:
        binary = per_output.get(tensor.name, default)
        choice[tensor.name] = binary or tensor.datatype == "BF16"
    return choice


def _json_data(tensor: InferOutput | InferInput) -> Any:
    array = tensor.as_numpy()
    if tensor.datatype == "BYTES":
        try:
            return [
                item.decode("utf-8") if isinstance(item, bytes) else str(item)
                for item in array.ravel()
            ]
        except UnicodeDecodeError:
            raise errors.InferenceError(
                f"Output {tensor.name} holds bytes that are not UTF-8; ask for it as binary data."
            ) from None
    return _contiguous(array).ravel()


def _contiguous(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def _tensor_dict(tensor: InferOutput | InferInput, binary: bool, chunks: list[bytes]) -> Any:
    out: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
    }
    parameters = dict(tensor.parameters)
    parameters.pop("binary_data", None)
    if binary:
        chunk = datatypes.to_bytes(tensor.datatype, tensor.as_numpy())
        chunks.append(chunk)
        parameters["binary_data_size"] = len(chunk)
    else:
        out["data"] = _json_data(tensor)
    if parameters:
        out["parameters"] = parameters
    return out


def encode_response(
    response: InferResponse, request: InferRequest | None = None
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    choice = _binary_choice(response, request)
    chunks: list[bytes] = []
    body: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        body["model_version"] = response.model_version
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = [_tensor_dict(t, choice[t.name], chunks) for t in response.outputs]
    header = dumps(body)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def encode_request(request: InferRequest, binary: bool = False) -> tuple[bytes, int | None]:
    """A request body (for clients and the transformer-to-predictor hop)."""
    chunks: list[bytes] = []
    body: dict[str, Any] = {}
    if request.id is not None:
        body["id"] = request.id
    if request.parameters:
        body["parameters"] = request.parameters
    body["inputs"] = [
        _tensor_dict(t, binary or t.datatype == "BF16", chunks) for t in request.inputs
    ]
    if request.request_outputs is not None:
        body["outputs"] = [
            {"name": r.name, **({"parameters": r.parameters} if r.parameters else {})}
            for r in request.request_outputs
        ]
    header = dumps(body)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def response_to_dict(response: InferResponse) -> dict[str, Any]:
    body, header_length = encode_response(response)
    result: dict[str, Any] = orjson.loads(body[:header_length] if header_length else body)
    return result


def request_to_dict(request: InferRequest) -> dict[str, Any]:
    body, header_length = encode_request(request)
    result: dict[str, Any] = orjson.loads(body[:header_length] if header_length else body)
    return result
