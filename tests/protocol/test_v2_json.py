"""The v2 REST codec on its own: JSON and binary bodies, both directions."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from modelhost import InferOutput, InferResponse, RequestedOutput, errors
from modelhost.protocol import datatypes, v2_json


def request_body(*inputs: dict[str, object], **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def test_json_request_decodes_to_numpy_once() -> None:
    body = request_body(
        {"name": "a", "shape": [2, 2], "datatype": "INT16", "data": [[1, 2], [3, 4]]},
        id="r1",
        parameters={"p": 1},
        outputs=[{"name": "o", "parameters": {"binary_data": True}}],
    )
    request = v2_json.decode_request(body, None, "m", "3")
    tensor = request.inputs[0]
    assert tensor.as_numpy().dtype == np.int16
    assert tensor.as_numpy() is tensor.as_numpy()
    assert tensor.data == [[1, 2], [3, 4]]  # KServe's .data keeps what the client sent
    assert (request.id, request.model_name, request.model_version) == ("r1", "m", "3")
    assert request.parameters == {"p": 1}
    assert request.request_outputs is not None
    assert request.request_outputs[0].binary_data is True


def test_binary_tensor_is_a_view_of_the_body() -> None:
    raw = np.arange(6, dtype="<f8").tobytes()
    header = request_body(
        {
            "name": "a",
            "shape": [2, 3],
            "datatype": "FP64",
            "parameters": {"binary_data_size": len(raw)},
        }
    )
    body = header + raw
    request = v2_json.decode_request(body, len(header), "m")
    array = request.inputs[0].as_numpy()
    assert array.shape == (2, 3)
    assert not array.flags.owndata  # zero-copy: no list, no copy
    assert "binary_data_size" not in request.inputs[0].parameters


def test_mixed_json_and_binary_inputs_in_order() -> None:
    first = np.array([1, 2], dtype="<i4").tobytes()
    third = datatypes.to_bytes("BYTES", np.array([b"hi"], dtype=object))
    header = request_body(
        {"name": "a", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
        {"name": "b", "shape": [1], "datatype": "BOOL", "data": [True]},
        {
            "name": "c",
            "shape": [1],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(third)},
        },
    )
    request = v2_json.decode_request(header + first + third, len(header), "m")
    assert request.inputs[0].as_numpy().tolist() == [1, 2]
    assert request.inputs[1].as_numpy().tolist() == [True]
    assert request.inputs[2].as_numpy().tolist() == [b"hi"]


def test_trailing_binary_bytes_are_rejected() -> None:
    header = request_body({"name": "a", "shape": [1], "datatype": "INT8", "data": [1]})
    with pytest.raises(errors.InvalidInput, match="belong to no tensor"):
        v2_json.decode_request(header + b"xx", len(header), "m")


def response_with(*outputs: InferOutput) -> InferResponse:
    return InferResponse("id-1", "m", list(outputs))


def output(name: str, array: np.ndarray, datatype: str | None = None) -> InferOutput:
    tensor = InferOutput(name, list(array.shape), datatype or datatypes.datatype_of(array))
    tensor.set_data_from_numpy(array)
    return tensor


def test_json_response_is_flat_and_typed() -> None:
    body, header_length = v2_json.encode_response(
        response_with(output("o", np.array([[1.5, 2.5]], dtype=np.float32)))
    )
    assert header_length is None
    assert orjson.loads(body) == {
        "model_name": "m",
        "id": "id-1",
        "outputs": [{"name": "o", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}],
    }


def test_per_output_binary_choice_overrides_the_request_default() -> None:
    header = request_body(
        {"name": "a", "shape": [1], "datatype": "INT8", "data": [1]},
        parameters={"binary_data_output": True},
        outputs=[{"name": "x"}, {"name": "y", "parameters": {"binary_data": False}}],
    )
    request = v2_json.decode_request(header, None, "m")
    response = response_with(
        output("x", np.array([7], dtype=np.int64)), output("y", np.array([8], dtype=np.int64))
    )
    body, header_length = v2_json.encode_response(response, request)
    assert header_length is not None
    parsed = orjson.loads(body[:header_length])
    assert parsed["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert parsed["outputs"][1]["data"] == [8]
    assert np.frombuffer(body[header_length:], "<i8").tolist() == [7]


def test_bf16_outputs_always_travel_binary() -> None:
    values = np.array([1.0, -2.0], dtype=np.float32)
    body, header_length = v2_json.encode_response(response_with(output("b", values, "BF16")))
    assert header_length is not None
    assert datatypes.from_bytes("BF16", [2], body[header_length:]).tolist() == [1.0, -2.0]


def test_non_utf8_bytes_need_binary_output() -> None:
    tensor = output("s", np.array([b"\xff"], dtype=object))
    with pytest.raises(errors.InferenceError, match="binary"):
        v2_json.encode_response(response_with(tensor))
    request = v2_json.decode_request(
        request_body(
            {"name": "a", "shape": [1], "datatype": "INT8", "data": [1]},
            outputs=[{"name": "s", "parameters": {"binary_data": True}}],
        ),
        None,
        "m",
    )
    body, header_length = v2_json.encode_response(response_with(tensor), request)
    assert body[header_length:] == b"\x01\x00\x00\x00\xff"


def test_request_round_trip_through_the_client_encoder() -> None:
    request = v2_json.decode_request(
        request_body({"name": "a", "shape": [3], "datatype": "UINT16", "data": [1, 2, 65535]}),
        None,
        "m",
    )
    request.request_outputs = [RequestedOutput("o", {"binary_data": True})]
    for binary in (False, True):
        body, header_length = v2_json.encode_request(request, binary=binary)
        again = v2_json.decode_request(body, header_length, "m")
        assert again.inputs[0].as_numpy().tolist() == [1, 2, 65535]
        assert again.request_outputs is not None
        assert again.request_outputs[0].name == "o"


def test_response_round_trip_through_the_client_decoder() -> None:
    response = response_with(output("o", np.array([[1, 0]], dtype=np.bool_)))
    body, header_length = v2_json.encode_response(response)
    decoded = v2_json.decode_response(body, header_length)
    assert decoded.outputs[0] == response.outputs[0]
    assert v2_json.response_to_dict(response)["outputs"][0]["data"] == [True, False]


# -- issue 14, item 10: JSON data typed by the tensor's datatype -------------------------


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("FP64", [True, False], "got `bool` - at `$.inputs[0].data[0]`"),
        ("FP32", [[1.0], [False]], "got `bool` - at `$.inputs[0].data[1][0]`"),
        ("BOOL", ["a", "b"], "got `str` - at `$.inputs[0].data[0]`"),
        ("BOOL", [1, 0], "got `int`"),
        ("INT32", [1.5, 2], "got `float`"),
        ("UINT8", [True], "got `bool`"),
        ("FP32", ["1.5"], "got `str`"),
        ("BYTES", [1, 2], "got `int`"),
        ("INT8", [None], "got `null`"),
    ],
)
def test_data_of_another_json_type_is_refused(
    datatype: str, data: list[object], fragment: str
) -> None:
    body = request_body({"name": "a", "shape": [2], "datatype": datatype, "data": data})
    with pytest.raises(errors.InvalidInput) as exc:
        v2_json.decode_request(body, None, "m")
    assert fragment in str(exc.value)
    assert "true or false for BOOL" in str(exc.value)  # the rule is said


def test_null_is_nan_in_float_data() -> None:
    body = request_body({"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, None]})
    array = v2_json.decode_request(body, None, "m").inputs[0].as_numpy()
    assert array[0] == 1.5
    assert np.isnan(array[1])


def test_data_nested_past_the_limit_is_refused() -> None:
    depth = v2_json.MAX_NESTING
    fits = b"[" * depth + b"1" + b"]" * depth
    body = b'{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":' + fits + b"}]}"
    assert v2_json.decode_request(body, None, "m").inputs[0].as_numpy().tolist() == [1]
    deeper = b"[" + fits + b"]"
    body = b'{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":' + deeper + b"}]}"
    with pytest.raises(errors.InvalidInput, match="nested too deeply"):
        v2_json.decode_request(body, None, "m")


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_parameter_values_are_scalars(value: object) -> None:
    tensor = {"name": "a", "shape": [1], "datatype": "INT8", "data": [1]}
    with pytest.raises(errors.InvalidInput, match=r"\$\.parameters"):
        v2_json.decode_request(request_body(tensor, parameters={"p": value}), None, "m")


def test_binary_data_size_must_be_an_integer() -> None:
    header = request_body(
        {"name": "a", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": True}}
    )
    with pytest.raises(errors.InvalidInput, match="binary_data_size True"):
        v2_json.decode_request(header + b"\x01", len(header), "m")


def test_a_json_request_is_not_a_raw_body() -> None:
    metadata = [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}]
    # 96 bytes: three rows of four FP64 values, had it been read as raw bytes.
    body = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,2,3,4.0]}]}'
    body = body[:-2] + b" " * (96 - len(body)) + body[-2:]
    assert len(body) == 96
    with pytest.raises(errors.InvalidInput, match="body is a JSON inference request"):
        v2_json.decode_raw_request(body, metadata, "m")
    raw = np.arange(8, dtype="<f8").tobytes()
    assert v2_json.decode_raw_request(raw, metadata, "m").inputs[0].shape == [2, 4]


@pytest.mark.parametrize(
    ("body", "ready"), [(b"", False), (b" ", False), (b"{}", False), (b'{"ready": true}', True)]
)
def test_repository_index_options(body: bytes, ready: bool) -> None:
    assert v2_json.decode_ready_only(body) is ready


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"ready": {}}', "Expected `bool`, got `object` - at `$.ready`"),
        (b'{"ready": "yes"}', "Expected `bool`"),
        (b'{"readyy": true}', "unknown field `readyy`"),
        (b"[]", "Expected `object`"),
        (b"{", "not valid JSON"),
    ],
)
def test_repository_index_options_are_checked(body: bytes, fragment: str) -> None:
    with pytest.raises(errors.InvalidInput) as exc:
        v2_json.decode_ready_only(body)
    assert fragment in str(exc.value)


def test_load_and_unload_parameters_are_an_object() -> None:
    assert v2_json.decode_load_parameters(b"") == {}
    assert v2_json.decode_load_parameters(b'{"parameters": {}}') == {}
    assert v2_json.decode_unload_parameters(b'{"parameters": {"unload_dependents": true}}') == {
        "unload_dependents": True
    }
    for decode in (v2_json.decode_load_parameters, v2_json.decode_unload_parameters):
        with pytest.raises(errors.InvalidInput, match=r"got `null` - at `\$\.parameters`"):
            decode(b'{"parameters": null}')
