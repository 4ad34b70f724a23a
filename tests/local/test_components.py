"""A transformer in front of its predictor, and the payload logger, on a real platform."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from platform_fixtures import RunningPlatform

ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]

PIPELINE = """
# KServe's transformer + predictor shape; the transformer's image is replaced by its command.
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris-pipeline
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
  transformer:
    containers:
      - name: kserve-container
        image: example.com/iris-transformer:latest
        command: ["python", "tests/local/apps/iris_transformer.py"]
  explainer:
    containers:
      - name: kserve-container
        image: example.com/iris-explainer:latest
        command: ["python", "tests/local/apps/iris_explainer.py"]
"""


def test_transformer_calls_its_predictor_and_explain_goes_to_the_explainer(
    platform: RunningPlatform,
) -> None:
    platform.apply(PIPELINE)
    status = platform.wait_ready("iris-pipeline")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["TransformerReady"] == "True"
    assert conditions["PredictorReady"] == "True"
    assert conditions["ExplainerReady"] == "True"
    assert set(status["components"]) == {"predictor", "transformer", "explainer"}
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        response = client.post(
            "/v1/models/iris-pipeline:predict",
            json={"instances": ROWS},
            headers={"Host": "iris-pipeline.default.example.com"},
        )
        assert response.status_code == 200, response.text
        # The predictor's answer, marked by the transformer's postprocess.
        assert response.json() == {"predictions": [1, 1], "transformed": True}
        # The predictor's own host skips the transformer, as KServe's component URL does.
        direct = client.post(
            "/v1/models/iris-pipeline:predict",
            json={"instances": ROWS},
            headers={"Host": "iris-pipeline-predictor.default.example.com"},
        )
        assert direct.json() == {"predictions": [1, 1]}
        # KServe routes :explain to the explainer, which calls the transformer in turn.
        explained = client.post(
            "/v1/models/iris-pipeline:explain",
            json={"instances": ROWS},
            headers={"Host": "iris-pipeline.default.example.com"},
        )
        assert explained.status_code == 200, explained.text
        assert explained.json() == {
            "predictions": [1, 1],
            "explanations": ["petal length", "petal length"],
        }


@pytest.fixture
def sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server that records every CloudEvent posted to it."""
    events: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            events.append(
                {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
            )
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", events
    server.shutdown()
    server.server_close()


def test_logger_sends_request_and_response_events_and_batcher_batches(
    platform: RunningPlatform, sink: tuple[str, list[dict[str, Any]]]
) -> None:
    url, events = sink
    platform.apply(
        f"""
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
spec:
  predictor:
    batcher:
      maxBatchSize: 8
      maxLatency: 20
    logger:
      mode: all
      url: {url}
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
"""
    )
    platform.wait_ready("sklearn-iris")
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        ok = client.post(
            "/v1/models/sklearn-iris:predict",
            json={"instances": ROWS},
            headers={"Host": "sklearn-iris.default.example.com", "x-request-id": "req-1"},
        )
        assert ok.status_code == 200
        bad = client.post(
            "/v1/models/sklearn-iris:predict",
            content=b'{"instances": "nope"}',
            headers={"Host": "sklearn-iris.default.example.com", "x-request-id": "req-2"},
        )
        assert bad.status_code == 400
        # The batcher became the replica's adaptive batching: its metrics say so.
        metrics = client.get("/metrics", headers={"Host": "sklearn-iris.default.example.com"})
        assert 'modelhost_batch_size_count{model="sklearn-iris"} 1.0' in metrics.text
    deadline = time.monotonic() + 10
    while len(events) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    by_type = {(e["headers"]["ce-id"], e["headers"]["ce-type"]): e for e in events}
    request = by_type[("req-1", "org.kubeflow.serving.inference.request")]
    response = by_type[("req-1", "org.kubeflow.serving.inference.response")]
    assert request["body"] == b'{"instances":[[6.8,2.8,4.8,1.4],[6.0,3.4,4.5,1.6]]}'
    assert response["body"] == b'{"predictions":[1,1]}'
    assert request["headers"]["ce-inferenceservicename"] == "sklearn-iris"
    assert request["headers"]["ce-namespace"] == "default"
    assert request["headers"]["ce-component"] == "predictor"
    # A refused request is logged too, with its status.
    failed = by_type[("req-2", "org.kubeflow.serving.inference.response")]
    assert failed["headers"]["ce-statuscode"] == "400"
    assert len(events) == 4
