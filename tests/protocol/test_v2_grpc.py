"""The gRPC codec: every datatype both ways, raw and typed, and its validation errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as triton_pb

from modelhost import errors
from modelhost.protocol import v2_grpc
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([[0, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1]], dtype=np.uint64),
    "INT8": np.array([[-128, 127]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 2**15 - 1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
    "FP16": np.array([[0.5, -65504.0]], dtype=np.float16),
    "FP32": np.array([[0.5, -3.0e38]], dtype=np.float32),
    "FP64": np.array([[0.5, -1.0e308]], dtype=np.float64),
    "BF16": np.array([[0.5, -2.0]], dtype=np.float32),
    "BYTES": np.array([[b"x", b"\x00\xff"]], dtype=np.object_),
}
TYPED = sorted(set(ARRAYS) - {"FP16", "BF16"})


def _wire(message: Any) -> Any:
    """The message after a trip over the wire."""
    return type(message).FromString(message.SerializeToString())


def _request(datatype: str) -> InferRequest:
    array = ARRAYS[datatype]
    tensor = InferInput("t", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return InferRequest("m", [tensor], request_id="r1", parameters={"p": 1})


def _response(datatype: str) -> InferResponse:
    array = ARRAYS[datatype]
    tensor = InferOutput("t", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return InferResponse("r1", "m", [tensor], model_version="2")


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_request_round_trip(datatype: str, raw: bool) -> None:
    message = _wire(v2_grpc.request_to_proto(_request(datatype), raw=raw))
    assert bool(message.raw_input_contents) == (raw or datatype in ("FP16", "BF16"))
    decoded = v2_grpc.request_from_proto(message)
    assert decoded.id == "r1"
    assert decoded.model_name == "m"
    assert decoded.parameters == {"p": 1}
    assert decoded.from_grpc
    tensor = decoded.inputs[0]
    assert (tensor.name, tensor.datatype) == ("t", datatype)
    assert tensor.shape == list(ARRAYS[datatype].shape)
    np.testing.assert_array_equal(tensor.as_numpy(), ARRAYS[datatype])


@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_response_follows_the_request_form(datatype: str) -> None:
    for raw in (True, False):
        request = v2_grpc.request_from_proto(v2_grpc.request_to_proto(_request(datatype), raw=raw))
        message = _wire(v2_grpc.response_to_proto(_response(datatype), request))
        expect_raw = raw or datatype in ("FP16", "BF16")
        assert bool(message.raw_output_contents) == expect_raw
        assert message.outputs[0].HasField("contents") != expect_raw
        decoded = v2_grpc.response_from_proto(message)
        assert (decoded.id, decoded.model_name, decoded.model_version) == ("r1", "m", "2")
        np.testing.assert_array_equal(decoded.outputs[0].as_numpy(), ARRAYS[datatype])


@pytest.mark.parametrize("datatype", TYPED)
def test_typed_contents_use_the_protocol_field(datatype: str) -> None:
    message = v2_grpc.request_to_proto(_request(datatype), raw=False)
    field = {
        "BOOL": "bool_contents",
        "UINT64": "uint64_contents",
        "INT64": "int64_contents",
        "FP32": "fp32_contents",
        "FP64": "fp64_contents",
        "BYTES": "bytes_contents",
    }.get(datatype, "uint_contents" if datatype.startswith("U") else "int_contents")
    contents = message.inputs[0].contents
    assert [f.name for f, _ in contents.ListFields()] == [field]
    assert list(getattr(contents, field)) == ARRAYS[datatype].ravel().tolist()


def test_bf16_travels_as_its_upper_half() -> None:
    message = v2_grpc.request_to_proto(_request("BF16"))
    assert len(message.raw_input_contents[0]) == 2 * ARRAYS["BF16"].size


def test_messages_are_wire_compatible_with_tritonclient() -> None:
    request = _request("INT32")
    request.request_outputs = [RequestedOutput("t", {"binary_data": True})]
    ours = v2_grpc.request_to_proto(request)
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.inputs[0].name == "t"
    assert theirs.parameters["p"].int64_param == 1
    assert theirs.outputs[0].parameters["binary_data"].bool_param is True
    back = pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert back == ours


def test_parameters_of_every_kind() -> None:
    params = {"b": True, "i": -3, "u": 2**64 - 1, "d": 0.25, "s": "x", "n": np.int32(4)}
    request = InferRequest("m", [], parameters=params)
    decoded = v2_grpc.request_from_proto(_wire(v2_grpc.request_to_proto(request)))
    assert decoded.parameters == {**params, "n": 4}
    message = v2_grpc.request_to_proto(request)
    assert message.parameters["u"].WhichOneof("parameter_choice") == "uint64_param"
    with pytest.raises(errors.InvalidInput, match="'l'"):
        v2_grpc.request_to_proto(InferRequest("m", [], parameters={"l": [1]}))
    with pytest.raises(errors.InferenceError, match="'l'"):
        v2_grpc.response_to_proto(InferResponse(None, "m", [], parameters={"l": [1]}))


def test_requested_outputs_and_binary_choice() -> None:
    message = v2_grpc.request_to_proto(_request("INT32"), raw=False)
    message.outputs.add(name="t").parameters["binary_data"].bool_param = True
    request = v2_grpc.request_from_proto(message)
    assert request.request_outputs is not None
    assert request.request_outputs[0].binary_data is True
    response = v2_grpc.response_to_proto(_response("INT32"), request)
    assert len(response.raw_output_contents) == 1
    # The REST-only hint is not echoed as an output parameter.
    assert "binary_data" not in response.outputs[0].parameters


def test_no_requested_outputs_means_none() -> None:
    request = v2_grpc.request_from_proto(v2_grpc.request_to_proto(_request("INT8")))
    assert request.request_outputs is None
    assert request.model_version is None


def _bad(message: Any, *fragments: str) -> None:
    with pytest.raises(errors.InvalidInput) as exc:
        v2_grpc.request_from_proto(message)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_invalid_requests_name_the_input() -> None:
    both = v2_grpc.request_to_proto(_request("INT32"), raw=False)
    both.raw_input_contents.append(b"\x00" * 8)
    _bad(both, "Input t", "raw")
    short = v2_grpc.request_to_proto(_request("INT32"), raw=True)
    short.raw_input_contents[0] = b"\x00" * 4
    _bad(short, "Input t", "8 bytes")
    count = v2_grpc.request_to_proto(_request("INT32"), raw=True)
    count.raw_input_contents.append(b"")
    _bad(count, "2 entries for 1 inputs")
    missing = v2_grpc.request_to_proto(_request("FP64"), raw=False)
    missing.inputs[0].ClearField("contents")
    _bad(missing, "Input t", "needs 2 elements", "holds 0")
    typed_half = pb.ModelInferRequest(model_name="m")
    typed_half.inputs.add(name="h", datatype="FP16", shape=[0])
    _bad(typed_half, "Input h", "raw contents")
    wrapped = pb.ModelInferRequest(model_name="m")
    wrapped.inputs.add(name="w", datatype="UINT8", shape=[1]).contents.uint_contents.append(256)
    _bad(wrapped, "Input w", "UINT8")
    negative = pb.ModelInferRequest(model_name="m")
    negative.inputs.add(name="n", datatype="INT32", shape=[-1])
    _bad(negative, "Input n", "-1")
    unknown = pb.ModelInferRequest(model_name="m")
    unknown.inputs.add(name="u", datatype="FP8", shape=[1])
    _bad(unknown, "Input u", "FP8")
    truncated = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\x05\x00\x00\x00ab"])
    truncated.inputs.add(name="s", datatype="BYTES", shape=[1])
    _bad(truncated, "Input s", "truncated")


def test_raw_inputs_are_zero_copy_views() -> None:
    message = v2_grpc.request_to_proto(_request("FP32"))
    array = v2_grpc.request_from_proto(message).inputs[0].as_numpy()
    assert not array.flags.owndata
    assert not array.flags.writeable


def test_typed_contents_of_another_type_are_refused() -> None:
    # Issue 14, item 10, gRPC's side: values in another contents field were ignored.
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP64", shape=[2])
    tensor.contents.fp64_contents.extend([1.0, 2.0])
    assert v2_grpc.request_from_proto(message).inputs[0].as_numpy().tolist() == [1.0, 2.0]
    tensor.contents.bool_contents.extend([True, False])
    _bad(message, "Input x", "fp64_contents", "bool_contents")
    only_other = pb.ModelInferRequest(model_name="m")
    only_other.inputs.add(name="b", datatype="BOOL", shape=[1]).contents.bytes_contents.append(b"a")
    _bad(only_other, "Input b", "bool_contents", "bytes_contents")


def test_a_shape_numpy_cannot_hold_is_invalid_input() -> None:
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[b""])
    message.inputs.add(name="z", datatype="FP32", shape=[0, 2**62])
    _bad(message, "not a valid tensor shape")
