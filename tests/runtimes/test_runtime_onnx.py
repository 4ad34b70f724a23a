"""The ONNX runtime: graphs built here with onnx.helper, served over REST and gRPC."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from serving import RunningServer, start_server, stop_server

from modelhost import BatchSettings, errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput
from modelhost.runtimes import build_model, detect_runtime
from modelhost.runtimes.detect import get_runtime
from modelhost.runtimes.onnx import ONNXModel

WEIGHTS = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 10
X = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
B = np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.0]], dtype=np.float32)


def expected_logits(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ WEIGHTS + b


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def save_graph(folder: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any]) -> Path:
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes, "test", inputs, outputs, initializer=[numpy_helper.from_array(WEIGHTS, "W")]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime 1.17, the oldest supported, reads
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def classifier(folder: Path) -> Path:
    """x [batch, 4] and b [batch, 3] in; probs, logits (FP32) and label (INT64) out."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3]),
    ]
    outputs = [
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
    ]
    return save_graph(folder, nodes, inputs, outputs)


def single_input(folder: Path) -> Path:
    """x [batch, 4] in; y = x @ W out, and a sequence output the protocol cannot carry."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"]),
        helper.make_node("SequenceConstruct", ["y"], ["seq"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3]),
        helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
    ]
    return save_graph(folder, nodes, inputs, outputs)


def text_and_ints(folder: Path) -> Path:
    """words (strings) and counts (INT32) in; the words and the counts doubled out."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Identity", ["words"], ["same"]),
        helper.make_node("Add", ["counts", "counts"], ["doubled"]),
    ]
    inputs = [
        helper.make_tensor_value_info("words", TensorProto.STRING, [None]),
        helper.make_tensor_value_info("counts", TensorProto.INT32, [None, 2]),
    ]
    outputs = [
        helper.make_tensor_value_info("same", TensorProto.STRING, [None]),
        helper.make_tensor_value_info("doubled", TensorProto.INT32, [None, 2]),
    ]
    return save_graph(folder, nodes, inputs, outputs)


def loaded(path: Path, name: str) -> ONNXModel:
    model = build_model(path.parent, name)
    assert isinstance(model, ONNXModel)
    assert model.load()
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ONNXModel]:
    root = tmp_path_factory.mktemp("onnx")
    batched = loaded(single_input(root / "batched"), "batched")
    batched.batching = BatchSettings(max_batch_size=64, max_latency_ms=30)
    return {
        "clf": loaded(classifier(root / "clf"), "clf"),
        "single": loaded(single_input(root / "single"), "single"),
        "text": loaded(text_and_ints(root / "text"), "text"),
        "batched": batched,
    }


@pytest.fixture(scope="module")
def server(models: dict[str, ONNXModel]) -> Iterator[RunningServer]:
    running = start_server(list(models.values()))
    yield running
    stop_server(running)


def v2_body(**arrays: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "shape": list(a.shape), "datatype": "FP32", "data": a.ravel().tolist()}
            for name, a in arrays.items()
        ]
    }


def test_detection_and_aliases(tmp_path: Path) -> None:
    path = classifier(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{}")
    assert detect_runtime(path.parent) == "onnx"
    assert detect_runtime(path) == "onnx"
    assert get_runtime("onnxruntime").name == "onnx"
    model = build_model(path.parent, "m", runtime="onnxruntime", options={"nthread": 2})
    assert isinstance(model, ONNXModel)
    assert model.nthread == 2
    assert model.get_input_types() == []  # nothing is known before load
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": X.tolist()})


def test_metadata_over_http(server: RunningServer) -> None:
    response = httpx.get(f"{server.http_url}/v2/models/clf")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert metadata["outputs"] == [
        {"name": "probs", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    text = httpx.get(f"{server.http_url}/v2/models/text").json()
    assert [(t["name"], t["datatype"]) for t in text["inputs"]] == [
        ("words", "BYTES"),
        ("counts", "INT32"),
    ]
    # The sequence output has no v2 form: it is left out.
    single = httpx.get(f"{server.http_url}/v2/models/single").json()
    assert single["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]


def test_v2_json_inputs_by_name_in_any_order(server: RunningServer) -> None:
    body = v2_body(b=B, x=X)
    response = httpx.post(f"{server.http_url}/v2/models/clf/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert list(outputs) == ["probs", "logits", "label"]
    logits = expected_logits(X, B)
    assert outputs["logits"]["datatype"] == "FP32"
    assert outputs["logits"]["shape"] == [2, 3]
    np.testing.assert_allclose(np.reshape(outputs["logits"]["data"], (2, 3)), logits, rtol=1e-5)
    np.testing.assert_allclose(
        np.reshape(outputs["probs"]["data"], (2, 3)), softmax(logits), rtol=1e-5
    )
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == logits.argmax(axis=1).tolist()


def test_v2_inputs_by_position_when_no_name_matches(server: RunningServer) -> None:
    body = v2_body(**{"input-0": X, "input-1": B})
    response = httpx.post(f"{server.http_url}/v2/models/clf/infer", json=body)
    assert response.status_code == 200, response.text
    logits = response.json()["outputs"][1]
    np.testing.assert_allclose(np.reshape(logits["data"], (2, 3)), expected_logits(X, B), rtol=1e-5)


def test_binary_extension_with_requested_outputs(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.http_address)
    try:
        inputs = [
            triton_http.InferInput("x", list(X.shape), "FP32"),
            triton_http.InferInput("b", list(B.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(X, binary_data=True)
        inputs[1].set_data_from_numpy(B, binary_data=True)
        wanted = [triton_http.InferRequestedOutput("label", binary_data=True)]
        result = client.infer("clf", inputs, outputs=wanted)
    finally:
        client.close()
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    np.testing.assert_array_equal(result.as_numpy("label"), expected_logits(X, B).argmax(axis=1))


def test_grpc_infer(server: RunningServer) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    try:
        metadata = client.get_model_metadata("clf", as_json=True)
        assert [i["name"] for i in metadata["inputs"]] == ["x", "b"]
        inputs = [
            triton_grpc.InferInput("x", list(X.shape), "FP32"),
            triton_grpc.InferInput("b", list(B.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(X)
        inputs[1].set_data_from_numpy(B)
        wanted = [triton_grpc.InferRequestedOutput("probs")]
        result = client.infer("clf", inputs, outputs=wanted, request_id="g1")
    finally:
        client.close()
    assert result.get_response().id == "g1"
    assert [o.name for o in result.get_response().outputs] == ["probs"]
    np.testing.assert_allclose(result.as_numpy("probs"), softmax(expected_logits(X, B)), rtol=1e-5)


def test_only_the_requested_outputs_run(models: dict[str, ONNXModel]) -> None:
    request = InferRequest(
        "clf",
        [InferInput("x", [2, 4], "FP32", X), InferInput("b", [2, 3], "FP32", B)],
        request_outputs=[RequestedOutput("label"), RequestedOutput("logits")],
    )
    response = models["clf"].predict(request)
    assert isinstance(response, InferResponse)
    assert [o.name for o in response.outputs] == ["label", "logits"]
    request.request_outputs = [RequestedOutput("nope")]
    with pytest.raises(errors.InvalidInput, match=r"'nope' is not a tensor output.*probs"):
        models["clf"].predict(request)
    single = InferRequest(
        "single", [InferInput("x", [2, 4], "FP32", X)], request_outputs=[RequestedOutput("seq")]
    )
    with pytest.raises(errors.InvalidInput, match="'seq' is not a tensor output"):
        models["single"].predict(single)


def test_v1_instances_feed_a_one_input_model(server: RunningServer) -> None:
    # JSON numbers arrive as FP64: the graph's FP32 takes them.
    response = httpx.post(
        f"{server.http_url}/v1/models/single:predict", json={"instances": X.tolist()}
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], X @ WEIGHTS, rtol=1e-5)


def test_v1_object_instances_feed_inputs_by_name(models: dict[str, ONNXModel]) -> None:
    instances = [{"x": x.tolist(), "b": b.tolist()} for x, b in zip(X, B, strict=True)]
    result = models["clf"].predict({"instances": instances})
    predictions = result["predictions"]
    assert list(predictions) == ["probs", "logits", "label"]
    np.testing.assert_allclose(predictions["logits"], expected_logits(X, B), rtol=1e-5)
    with pytest.raises(errors.InvalidInput, match=r"takes the inputs \['x', 'b'\]"):
        models["clf"].predict({"instances": X.tolist()})


def test_v1_instances_that_do_not_fit(models: dict[str, ONNXModel]) -> None:
    rows = [{"x": X[0].tolist(), "b": B[0].tolist()}, {"x": X[1].tolist()}]
    with pytest.raises(errors.InvalidInput, match="Only some instances carry the input 'b'"):
        models["clf"].predict({"instances": rows})
    with pytest.raises(errors.InvalidInput, match="do not form an array"):
        models["single"].predict({"instances": [[1.0, 2.0, 3.0, 4.0], [1.0]]})


def test_strings_and_integers(server: RunningServer, models: dict[str, ONNXModel]) -> None:
    body = {
        "inputs": [
            {"name": "words", "shape": [2], "datatype": "BYTES", "data": ["héllo", "world"]},
            {"name": "counts", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]},
        ]
    }
    response = httpx.post(f"{server.http_url}/v2/models/text/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["same"] == {
        "name": "same",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["héllo", "world"],
    }
    # INT64 from the client fits the graph's INT32; the output keeps the graph's type.
    assert outputs["doubled"]["datatype"] == "INT32"
    assert outputs["doubled"]["data"] == [2, 4, 6, 8]
    binary = InferRequest(
        "text",
        [
            InferInput("words", [1], "BYTES", np.array(["é".encode()], dtype=np.object_)),
            InferInput("counts", [1, 2], "INT32", np.array([[1, 1]], dtype=np.int32)),
        ],
    )
    response = models["text"].predict(binary)
    assert response.outputs[0].as_numpy().tolist() == ["é"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (v2_body(x=X[:, :3], b=B), r"Input x has shape \[2, 3\]; the model expects \[-1, 4\]"),
        (v2_body(x=X), r"missing \['b'\]"),
        (v2_body(x=X, b=B, c=B), r"unknown \['c'\]"),
        (v2_body(x=X.ravel(), b=B), r"has shape \[8\]"),
        # Sizes the graph leaves free must still agree with each other.
        (v2_body(x=X, b=np.ones((3, 3), np.float32)), "cannot run on this input"),
    ],
)
def test_bad_input_is_a_400(server: RunningServer, body: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/clf/infer", json=body)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"])
    assert "ONNXRuntimeError" not in response.text


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"words": ("INT64", [2], [1, 2]), "counts": ("INT32", [1, 2], [1, 2])},
            "Input words is INT64; the model expects BYTES",
        ),
        (
            {"words": ("BYTES", [1], ["a"]), "counts": ("FP32", [1, 2], [1.5, 2])},
            "Input counts is FP32; the model expects INT32",
        ),
        (
            {"words": ("BYTES", [1], ["a"]), "counts": ("INT64", [1, 2], [1, 2**40])},
            "outside the range of INT32",
        ),
        (
            {"words": ("BYTES", [1], ["a"]), "counts": ("BYTES", [1, 2], ["1", "2"])},
            "Input counts is BYTES; the model expects INT32",
        ),
    ],
)
def test_wrong_datatype_is_a_400(
    server: RunningServer, inputs: dict[str, tuple[str, list[int], list[Any]]], message: str
) -> None:
    body = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": data}
            for name, (datatype, shape, data) in inputs.items()
        ]
    }
    response = httpx.post(f"{server.http_url}/v2/models/text/infer", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_concurrent_requests_are_batched_and_get_their_own_rows(server: RunningServer) -> None:
    def call(index: int) -> tuple[np.ndarray, Any]:
        rows = np.full((1 + index % 3, 4), index, dtype=np.float32)
        if index % 2:
            body = {"instances": rows.tolist()}
            response = httpx.post(f"{server.http_url}/v1/models/batched:predict", json=body)
            return rows, response.json()["predictions"]
        response = httpx.post(f"{server.http_url}/v2/models/batched/infer", json=v2_body(x=rows))
        output = response.json()["outputs"]
        assert [o["name"] for o in output] == ["y"]
        return rows, np.reshape(output[0]["data"], output[0]["shape"])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(36)))
    for rows, prediction in results:
        np.testing.assert_allclose(prediction, rows @ WEIGHTS, rtol=1e-5)
    metrics = httpx.get(f"{server.http_url}/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith('modelhost_batch_size_count{model="batched"}')
    )
    assert float(line.split()[-1]) < 36, "no two requests were ever batched"


def test_a_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(errors.ModelLoadError, match=r"Cannot load .*model\.onnx"):
        ONNXModel("bad", tmp_path).load()


def test_unload(tmp_path: Path) -> None:
    model = loaded(single_input(tmp_path / "m"), "m")
    model.unload()
    assert not model.ready
    assert model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": X.tolist()})
