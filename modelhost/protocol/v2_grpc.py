"""Open Inference Protocol v2 over gRPC: protobuf messages to and from ``InferRequest``.

The rules mirror ``v2_json``: a tensor travels either as typed protobuf contents or as
raw little-endian bytes (``raw_*_contents``), FP16 and BF16 only as raw bytes. Raw
inputs become zero-copy numpy views of the message's bytes; typed contents are read
through protobuf's array interface, so neither path loops in Python per element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.protocol import datatypes
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

__all__ = [
    "request_from_proto",
    "request_to_proto",
    "response_from_proto",
    "response_to_proto",
]

# The InferTensorContents field that carries each datatype (FP16 and BF16 have none).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_RAW_ONLY = frozenset({"FP16", "BF16"})
# Types narrower than their protobuf field: values are range-checked, never wrapped.
_NARROW = frozenset({"UINT8", "UINT16", "INT8", "INT16"})
# A packed repeated float/double field is its tag, a length, then the raw little-endian
# values: writing that directly is ~80x faster than handing protobuf a Python list.
_PACKED_TAG = {"FP32": b"\x32", "FP64": b"\x3a"}
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
# -- server side: decode requests, encode responses ----------------------------------


def request_from_proto(message: Any) -> InferRequest:
    """An ``InferRequest`` from a ``ModelInferRequest``; raises ``InvalidInput``."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise errors.InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
            "it needs one per input, in order."
        )
    inputs = [
        _tensor_from_proto(InferInput, item, raw[index] if raw else None, "Input")
        for index, item in enumerate(message.inputs)
    ]
    outputs = (
        [RequestedOutput(o.name, _params_from_proto(o.parameters)) for o in message.outputs]
        if message.outputs
        else None
    )
    request = InferRequest(
        model_name=message.model_name,
        infer_inputs=inputs,
        request_id=message.id or None,
        from_grpc=True,
        parameters=_params_from_proto(message.parameters),
        request_outputs=outputs,
        model_version=message.model_version or None,
    )
    # A request that came with raw contents gets raw contents back.
    request._use_raw_outputs = bool(raw)
    return request


def response_to_proto(response: InferResponse, request: InferRequest | None = None) -> Any:
    """A ``ModelInferResponse`` for ``response``, in the form ``request`` asks for.

    Outputs are raw when the request sent raw inputs or asked for binary outputs
    (``binary_data_output``, or ``binary_data`` on a requested output), and always when
    an output is FP16 or BF16. Raw is all-or-nothing in the protocol, so one raw output
    makes every output raw.
    """
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    if response.parameters:
        _params_to_proto(message.parameters, response.parameters, errors.InferenceError)
    raw = _use_raw(response, request)
    _tensors_to_proto(message.outputs, message.raw_output_contents, response.outputs, raw)
    return message


def _use_raw(response: InferResponse, request: InferRequest | None) -> bool:
    if response.use_binary_outputs or any(t.datatype in _RAW_ONLY for t in response.outputs):
        return True
    if request is None:
        return False
    if request._use_raw_outputs or request.use_binary_outputs:
        return True
    return any(r.binary_data for r in request.request_outputs or ())


# -- client side: encode requests, decode responses ----------------------------------


def request_to_proto(request: InferRequest, raw: bool = True) -> Any:
    """A ``ModelInferRequest`` for ``request``: raw inputs, or typed contents if not ``raw``.

    Typed contents cannot carry FP16 or BF16; a request holding one goes raw.
    """
    message = pb.ModelInferRequest(
        model_name=request.model_name,
        model_version=request.model_version or "",
        id=request.id or "",
    )
    if request.parameters:
        _params_to_proto(message.parameters, request.parameters, errors.InvalidInput)
    for wanted in request.request_outputs or ():
        output = message.outputs.add(name=wanted.name)
        if wanted.parameters:
            _params_to_proto(output.parameters, wanted.parameters, errors.InvalidInput)
    raw = raw or any(t.datatype in _RAW_ONLY for t in request.inputs)
    _tensors_to_proto(message.inputs, message.raw_input_contents, request.inputs, raw)
    return message


def response_from_proto(message: Any) -> InferResponse:
    """An ``InferResponse`` from a ``ModelInferResponse`` (raw or typed outputs)."""
    raw = message.raw_output_contents
    if raw and len(raw) != len(message.outputs):
        raise errors.InvalidInput(
            f"raw_output_contents has {len(raw)} entries for {len(message.outputs)} outputs."
        )
    outputs = [
        _tensor_from_proto(InferOutput, item, raw[index] if raw else None, "Output")
        for index, item in enumerate(message.outputs)
    ]
    return InferResponse(
        message.id or None,
        message.model_name,
        outputs,
        message.model_version or None,
        from_grpc=True,
        parameters=_params_from_proto(message.parameters),
    )


# -- tensors --------------------------------------------------------------------------


def _tensor_from_proto(
    kind: type[InferInput] | type[InferOutput], item: Any, raw: bytes | None, role: str
) -> Any:
    name, datatype = item.name, item.datatype
    shape = list(item.shape)
    if datatype not in datatypes.DATATYPES:
        raise errors.InvalidInput(
            f"{role} {name}: unsupported datatype {datatype!r}; expected one of "
            f"{sorted(datatypes.DATATYPES)}."
        )
    if any(dim < 0 for dim in shape):
        raise errors.InvalidInput(f"{role} {name}: dimensions must be >= 0, got {shape}.")
    tensor = kind(name, shape, datatype, parameters=_params_from_proto(item.parameters))
    if raw is not None:
        if item.HasField("contents") and item.contents.ByteSize():
            raise errors.InvalidInput(
                f"{role} {name} has typed contents and the message also has raw contents; "
                "send one or the other."
            )
        try:
            tensor.data = datatypes.from_bytes(datatype, shape, raw)
        except errors.InvalidInput as exc:
            raise errors.InvalidInput(f"{role} {name}: {exc}") from None
    else:
        tensor.data = _typed_array(role, name, datatype, shape, item.contents)
    return tensor


def _typed_array(
    role: str, name: str, datatype: str, shape: list[int], contents: Any
) -> npt.NDArray[Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise errors.InvalidInput(
            f"{role} {name}: {datatype} has no typed contents; send it as raw contents."
        )
    values = getattr(contents, field)
    filled = contents.ListFields()
    if len(filled) > 1 or (filled and filled[0][0].name != field):
        # REST's "true in FP64 data": values of another type, which would be ignored.
        others = sorted(f.name for f, _ in filled if f.name != field)
        raise errors.InvalidInput(
            f"{role} {name}: {datatype} values go in {field}, but the message fills {others}."
        )
    expected = datatypes.element_count(shape)
    if len(values) != expected:
        raise errors.InvalidInput(
            f"{role} {name}: shape {shape} needs {expected} elements, {field} holds {len(values)}."
        )
    if datatype == "BYTES":
        array = np.empty(expected, dtype=np.object_)
        array[:] = list(values)
        return datatypes.reshaped(array, shape)
    dtype = datatypes.numpy_dtype(datatype)
    # protobuf's repeated scalars expose the array interface: one C-level copy.
    wide = np.array(values)
    if datatype in _NARROW and wide.size:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise errors.InvalidInput(
                f"{role} {name}: {field} holds values outside the range of {datatype}."
            )
    return datatypes.reshaped(wide.astype(dtype, copy=False), shape)


def _tensors_to_proto(
    target: Any, raw_target: Any, tensors: Sequence[InferInput | InferOutput], raw: bool
) -> None:
    chunks: list[bytes] = []
    for tensor in tensors:
        parameters = tensor.parameters
        if "binary_data" in parameters:
            # A REST-only hint: on gRPC the raw/typed choice is the message's.
            parameters = {k: v for k, v in parameters.items() if k != "binary_data"}
        item = target.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if parameters:
            _params_to_proto(item.parameters, parameters, errors.InferenceError)
        array = tensor.as_numpy()
        if raw:
            chunks.append(datatypes.to_bytes(tensor.datatype, array))
        else:
            _set_typed(item.contents, tensor.datatype, array)
    if chunks:
        raw_target.extend(chunks)


def _set_typed(contents: Any, datatype: str, array: npt.NDArray[Any]) -> None:
    if datatype == "BYTES":
        contents.bytes_contents.extend([datatypes.as_bytes(v) for v in array.ravel()])
        return
    packed_tag = _PACKED_TAG.get(datatype)
    if packed_tag is not None:
        data = datatypes.to_bytes(datatype, array)
        contents.MergeFromString(packed_tag + _varint(len(data)) + data)
        return
    values = np.asarray(array, dtype=datatypes.numpy_dtype(datatype)).ravel().tolist()
    getattr(contents, _CONTENTS_FIELD[datatype]).extend(values)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# -- parameters -----------------------------------------------------------------------


def _params_from_proto(params: Any) -> dict[str, Any]:
    if not params:
        return {}
    result: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            result[key] = getattr(value, choice)
    return result


def _params_to_proto(
    target: Any, params: Mapping[str, Any], error: type[errors.ModelhostError]
) -> None:
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if -_INT64_MAX - 1 <= value <= _INT64_MAX:
                slot.int64_param = value
            elif 0 <= value <= _UINT64_MAX:
                slot.uint64_param = value
            else:
                raise error(f"Parameter {key!r}: {value} does not fit in 64 bits.")
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, str):
            slot.string_param = value
        else:
            del target[key]
            raise error(
                f"Parameter {key!r}: a {type(value).__name__} has no gRPC form; parameters "
                "are bool, int, float or str."
            )
