"""Adaptive batching: concurrent requests share one predict and get exactly their rows back."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from serving import RunningServer, StartServer
from testmodels import BatchRecordingModel, EchoModel

from modelhost import BatchSettings, get_predict_input


@pytest.fixture
def model() -> BatchRecordingModel:
    return BatchRecordingModel()


@pytest.fixture
def server(serve: StartServer, model: BatchRecordingModel) -> RunningServer:
    return serve([model], max_batch_size=64, max_latency_ms=20)


def rows_for(index: int) -> np.ndarray:
    count = 1 + index % 4  # requests of 1 to 4 rows each
    return np.arange(count * 3, dtype=np.float32).reshape(count, 3) + index * 100


def call_v2(url: str, index: int) -> tuple[int, dict[str, object]]:
    rows = rows_for(index)
    body = {
        "id": f"r{index}",
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ],
    }
    response = httpx.post(f"{url}/v2/models/batched/infer", json=body, timeout=30)
    return response.status_code, response.json()


def check_v2(index: int, status: int, body: dict[str, object]) -> None:
    rows = rows_for(index)
    assert status == 200, body
    assert body["id"] == f"r{index}"
    outputs = {o["name"]: o for o in body["outputs"]}  # type: ignore[attr-defined]
    assert outputs["double"]["shape"] == list(rows.shape)
    assert outputs["double"]["data"] == (rows * 2).ravel().tolist()
    assert outputs["sum"]["data"] == rows.sum(axis=1).tolist()


def test_concurrent_v2_requests_get_their_own_rows(
    server: RunningServer, model: BatchRecordingModel
) -> None:
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: call_v2(server.http_url, i), range(48)))
    for index, (status, body) in enumerate(results):
        check_v2(index, status, body)
    expected_rows = sum(rows_for(i).shape[0] for i in range(48))
    assert sum(model.calls) == expected_rows
    assert len(model.calls) < 48, "no two requests were ever batched"
    assert max(model.calls) <= 64


def test_v1_v2_and_grpc_requests_batch_together(
    server: RunningServer, model: BatchRecordingModel
) -> None:
    def call(index: int) -> None:
        rows = rows_for(index)
        kind = index % 3
        if kind == 0:
            check_v2(index, *call_v2(server.http_url, index))
        elif kind == 1:
            response = httpx.post(
                f"{server.http_url}/v1/models/batched:predict",
                json={"instances": rows.astype(np.float64).tolist()},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            predictions = response.json()["predictions"]  # one entry per output
            assert predictions["double"] == (rows * 2).tolist()
            assert predictions["sum"] == rows.sum(axis=1).tolist()
        else:
            client = triton_grpc.InferenceServerClient(server.grpc_address)
            try:
                tensor = triton_grpc.InferInput("x", list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows)
                result = client.infer("batched", [tensor], request_id=f"g{index}")
                np.testing.assert_array_equal(result.as_numpy("double"), rows * 2)
                np.testing.assert_array_equal(result.as_numpy("sum"), rows.sum(axis=1))
                assert result.get_response().id == f"g{index}"
            finally:
                client.close()

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(call, range(36)))
    assert len(model.calls) < 36


def test_a_failing_request_does_not_fail_its_neighbours(
    server: RunningServer, model: BatchRecordingModel
) -> None:
    bad = {1, 7}

    def call(index: int) -> tuple[int, int, dict[str, object]]:
        rows = rows_for(index) * (-1 if index in bad else 1)
        rows[0, 0] = -1 if index in bad else rows[0, 0]
        body = {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        response = httpx.post(f"{server.http_url}/v2/models/batched/infer", json=body, timeout=30)
        return index, response.status_code, response.json()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    for index, status, body in results:
        if index in bad:
            assert status == 400
            assert "negative" in str(body["error"])
        else:
            assert status == 200, body
    assert max(model.calls) > 1


def test_unsplittable_results_fall_back_to_one_request_at_a_time(serve: StartServer) -> None:
    class Total(EchoModel):
        def predict(self, payload, headers=None):  # type: ignore[no-untyped-def]
            return {"predictions": [float(get_predict_input(payload).sum())]}

    model = Total("total")
    model.batching = BatchSettings(max_batch_size=16, max_latency_ms=20)
    server = serve([model])

    def call(value: int) -> object:
        response = httpx.post(
            f"{server.http_url}/v1/models/total:predict",
            json={"instances": [[value, value]]},
            timeout=30,
        )
        return response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    assert answers == [{"predictions": [2.0 * v]} for v in range(8)]


def test_batch_metrics_are_exported(server: RunningServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: call_v2(server.http_url, i), range(16)))
    text = httpx.get(f"{server.http_url}/metrics").text
    assert 'modelhost_batch_size_count{model="batched"}' in text
    assert 'modelhost_batch_queue_seconds_count{model="batched"} 16.0' in text


def test_random_mix_under_load(server: RunningServer, model: BatchRecordingModel) -> None:
    order = list(range(60))
    random.Random(7).shuffle(order)
    with ThreadPoolExecutor(24) as pool:
        results = dict(
            zip(order, pool.map(lambda i: call_v2(server.http_url, i), order), strict=True)
        )
    for index, (status, body) in results.items():
        check_v2(index, status, body)


def test_an_idle_shape_never_blocks_another(
    server: RunningServer, model: BatchRecordingModel
) -> None:
    # FP32 rows of 3, then FP64 rows of 3 (v1), then rows of 5: three shape keys in turn,
    # each queue idle once its request is done. None may wait on another's slot.
    for _ in range(2):
        status, body = call_v2(server.http_url, 0)
        check_v2(0, status, body)
        response = httpx.post(
            f"{server.http_url}/v1/models/batched:predict",
            json={"instances": [[1.0, 2.0, 3.0]]},
            timeout=10,
        )
        assert response.status_code == 200
        wide = {
            "inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]
        }
        response = httpx.post(f"{server.http_url}/v2/models/batched/infer", json=wide, timeout=10)
        assert response.status_code == 200
