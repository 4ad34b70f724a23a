"""A slow synchronous predict stalls nothing else; every request is counted in /metrics."""

from __future__ import annotations

import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serving import StartServer
from testmodels import EchoModel, SlowModel


def test_slow_sync_predict_does_not_delay_health_or_other_models(serve: StartServer) -> None:
    slow = SlowModel(delay=2.0)
    server = serve([slow, EchoModel()])
    result: dict[str, int] = {}

    def call_slow() -> None:
        response = httpx.post(
            f"{server.http_url}/v1/models/slow:predict", json={"instances": [1]}, timeout=30
        )
        result["status"] = response.status_code

    caller = threading.Thread(target=call_slow)
    caller.start()
    assert slow.started.wait(10), "the slow predict never started"
    began = time.perf_counter()
    live = httpx.get(f"{server.http_url}/v2/health/live", timeout=5)
    echo = httpx.post(
        f"{server.http_url}/v1/models/echo:predict", json={"instances": [1]}, timeout=5
    )
    elapsed = time.perf_counter() - began
    caller.join(30)
    assert live.status_code == 200
    assert echo.status_code == 200
    # Both answered while the slow predict still held its thread (it sleeps 2 s).
    assert elapsed < 1.0, f"health and echo took {elapsed:.2f}s behind a slow predict"
    assert result["status"] == 200


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_metrics_count_requests_by_model_protocol_endpoint_and_status(
    serve: StartServer,
) -> None:
    server = serve([EchoModel()], enable_grpc=False)
    url = server.http_url
    for _ in range(3):
        httpx.post(f"{url}/v1/models/echo:predict", json={"instances": [1]})
    httpx.post(f"{url}/v1/models/echo:predict", content=b"{bad")
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}
    httpx.post(f"{url}/v2/models/echo/infer", json=body)
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)

    def labels(**values: str) -> frozenset[tuple[str, str]]:
        return frozenset(values.items())

    ok = labels(model="echo", protocol="v1", endpoint="predict", status="200")
    bad = labels(model="echo", protocol="v1", endpoint="predict", status="400")
    v2 = labels(model="echo", protocol="v2", endpoint="infer", status="200")
    assert found[("modelhost_requests_total", ok)] == 3
    assert found[("modelhost_requests_total", bad)] == 1
    assert found[("modelhost_requests_total", v2)] == 1
    count = labels(model="echo", protocol="v1", endpoint="predict")
    assert found[("modelhost_request_duration_seconds_count", count)] == 4
    # KServe's step histograms, with KServe's names and label
    assert found[("request_predict_seconds_count", labels(model_name="echo"))] == 4
    assert ("modelhost_requests_in_flight", labels(protocol="v2")) in found


def test_metrics_in_openmetrics_when_asked(serve: StartServer) -> None:
    server = serve([EchoModel()], enable_grpc=False)
    response = httpx.get(
        f"{server.http_url}/metrics", headers={"accept": "application/openmetrics-text"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
