"""InferenceGraphs on the embedded platform: KServe's four graph shapes over real replicas.

One platform for the module, with three real model servers (a logistic regression, a model
that always answers class 2, and an XGBoost booster, fetched from a GCS emulator as KServe's
samples are) and a graph router replica per graph, all called over HTTP through the gateway.
Two steps call a small stand-in HTTP server on loopback (``serviceUrl``): one that answers
500 and one that answers too late, which no model server does on purpose.
"""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
import xgboost
from conftest import GcsServer
from platform_fixtures import RunningPlatform, is_ready, start_platform, stop_platform
from sklearn.datasets import load_iris

from modelhost.errors import ModelhostError

SETOSA = [5.1, 3.5, 1.4, 0.2]  # the logistic model's class 0
VIRGINICA = [7.7, 3.0, 6.1, 2.3]  # class 2 for both trained models

SERVICES = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: always-two
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model-2
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: xgboost-iris
spec:
  predictor:
    model:
      modelFormat: {name: xgboost}
      storageUri: gs://kfserving-examples/models/xgboost/iris
"""

SEQUENCE = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: model-chainer
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - serviceName: sklearn-iris
          name: sklearn-iris
        - serviceName: xgboost-iris
          name: xgboost-iris
          data: $request
"""

SWITCH = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: model-switch
spec:
  nodes:
    root:
      routerType: Switch
      steps:
        - name: by-object
          serviceName: always-two
          condition: '[@this].#(instances.0.0>=7)'
        - name: by-array
          serviceName: sklearn-iris
          condition: 'instances.#(3<0.5)'
        - name: by-pattern
          serviceName: xgboost-iris
          condition: '[@this].#(parameters.route%"xgb*")'
"""

ENSEMBLE = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: ensemble-model
spec:
  nodes:
    root:
      routerType: Ensemble
      steps:
        - serviceName: sklearn-iris
          name: sklearn-iris
        - serviceName: always-two
          name: always-two
"""

SPLITTER = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: splitter-model
spec:
  nodes:
    root:
      routerType: Splitter
      steps:
        - serviceName: sklearn-iris
          weight: 80
        - serviceName: always-two
          weight: 20
"""


class _StandIn(http.server.BaseHTTPRequestHandler):
    """``/fail`` answers 500; ``/slow`` answers after two seconds; anything else echoes."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.path == "/fail":
            self._answer(500, b'{"error": "the stand-in model failed"}')
        elif self.path == "/slow":
            time.sleep(2)
            self._answer(200, body)
        else:
            self._answer(200, body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", params=["in-process", "replica"])
def graphs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sample_buckets: GcsServer,
) -> Iterator[RunningPlatform]:
    """The platform, with its graph routers in the gateway, then as replicas."""
    x, y = load_iris(return_X_y=True)
    booster = xgboost.train(
        {"objective": "multi:softmax", "num_class": 3, "max_depth": 2},
        xgboost.DMatrix(x, label=y),
        num_boost_round=5,
    )
    saved = io.BytesIO(booster.save_raw("json"))
    sample_buckets.upload(
        "kfserving-examples", {"model.json": saved.getvalue()}, prefix="models/xgboost/iris/"
    )
    tmp = tmp_path_factory.mktemp("graphs")
    running = start_platform(
        tmp / "home",
        replica_env={**sample_buckets.env(), "MODELHOST_CACHE_DIR": str(tmp / "cache")},
        graph_router=request.param,
    )
    try:
        running.apply(SERVICES + "---" + SEQUENCE + "---" + ENSEMBLE + "---" + SPLITTER)
        for name in ("sklearn-iris", "always-two", "xgboost-iris"):
            running.wait_ready(name)
        for name in ("model-chainer", "ensemble-model", "splitter-model"):
            wait_graph(running, name)
        yield running
    finally:
        stop_platform(running)


def graph_status(platform: RunningPlatform, name: str) -> dict[str, Any]:
    found: dict[str, Any] = platform.client.get("ig", "default", name).get("status") or {}
    return found


def wait_graph(platform: RunningPlatform, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = graph_status(platform, name)
        if is_ready(status):
            return status
        time.sleep(0.1)
    revisions = platform.client.revisions("default", name, "ig")
    raise AssertionError(f"graph {name} not Ready in {timeout}s: {status}; {revisions}")


def post(
    platform: RunningPlatform,
    path: str,
    body: bytes | dict[str, Any],
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(platform.url + path, data=data, method="POST")
    request.add_header("content-type", "application/json")
    if host is not None:
        request.add_header("host", host)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as failed:
        text = failed.read()
        return failed.code, dict(failed.headers), json.loads(text) if text else None


def direct(platform: RunningPlatform, service: str, instances: list[list[float]]) -> Any:
    status, _, answer = post(platform, f"/v1/models/{service}:predict", {"instances": instances})
    assert status == 200, answer
    return answer


def test_sequence_passes_the_request_to_a_request_step(graphs: RunningPlatform) -> None:
    status = graph_status(graphs, "model-chainer")
    assert status["url"] == "http://model-chainer.default.example.com"
    assert [c["type"] for c in status["conditions"]] == ["Ready"]
    request = {"instances": [SETOSA, VIRGINICA]}
    code, headers, answer = post(graphs, "/", request, host="model-chainer.default.example.com")
    assert code == 200, answer
    # The second step got the graph's request ($request), not the first step's answer.
    assert answer == direct(graphs, "xgboost-iris", [SETOSA, VIRGINICA])
    assert headers.get("x-request-id")
    # The graph also answers at its model paths, on any host.
    code, _, same = post(graphs, "/v1/models/model-chainer:predict", request)
    assert (code, same) == (200, answer)


def test_switch_on_object_array_and_pattern_conditions(graphs: RunningPlatform) -> None:
    graphs.apply(SWITCH)
    wait_graph(graphs, "model-switch")
    host = "model-switch.default.example.com"
    # An object query on the request: the first instance's first feature is 7 or more.
    code, _, answer = post(graphs, "/", {"instances": [VIRGINICA]}, host=host)
    assert (code, answer["predictions"]) == (200, [2])
    # An array query: an instance whose petal width is under 0.5 (a setosa).
    code, _, answer = post(graphs, "/", {"instances": [SETOSA]}, host=host)
    assert (code, answer) == (200, direct(graphs, "sklearn-iris", [SETOSA]))
    # A pattern on a field the models ignore.
    versicolor = [6.0, 2.9, 4.5, 1.5]
    request = {"instances": [versicolor], "parameters": {"route": "xgboost"}}
    code, _, answer = post(graphs, "/", request, host=host)
    assert (code, answer) == (200, direct(graphs, "xgboost-iris", [versicolor]))
    # No match: the request comes back unchanged, with 200 (KServe's behaviour).
    unmatched = {"instances": [versicolor]}
    assert post(graphs, "/", unmatched, host=host)[::2] == (200, unmatched)


def test_ensemble_merges_answers_by_step_name(graphs: RunningPlatform) -> None:
    code, _, answer = post(
        graphs, "/", {"instances": [SETOSA]}, host="ensemble-model.default.example.com"
    )
    assert code == 200, answer
    assert answer == {
        "sklearn-iris": direct(graphs, "sklearn-iris", [SETOSA]),
        "always-two": {"predictions": [2]},
    }


def test_splitter_sends_eighty_twenty(graphs: RunningPlatform) -> None:
    host = "splitter-model.default.example.com"
    counts = {0: 0, 2: 0}
    for _ in range(1000):
        code, _, answer = post(graphs, "/", {"instances": [SETOSA]}, host=host)
        assert code == 200, answer
        counts[answer["predictions"][0]] += 1
    # 20% ± 5 points went to the model that always answers 2.
    assert 150 <= counts[2] <= 250, counts


def test_tritonclient_v2_through_a_graph(graphs: RunningPlatform) -> None:
    client = triton_http.InferenceServerClient(graphs.url.removeprefix("http://"))
    try:
        inputs = triton_http.InferInput("input-0", [2, 4], "FP32")
        inputs.set_data_from_numpy(np.array([SETOSA, VIRGINICA], dtype=np.float32))
        result = client.infer("model-chainer", [inputs])
        got = result.as_numpy("output-0")
        assert got is not None
        expected = client.infer("xgboost-iris", [inputs]).as_numpy("output-0")
        assert expected is not None
        assert got.tolist() == expected.tolist()
    finally:
        client.close()


def test_a_graph_waits_for_its_services(graphs: RunningPlatform) -> None:
    graph = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: waiting
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - serviceName: not-yet
"""
    graphs.apply(graph)
    deadline = time.monotonic() + 30
    ready: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ready = next(iter(graph_status(graphs, "waiting").get("conditions") or ()), {})
        if ready.get("reason") == "ServicesNotFound":
            break
        time.sleep(0.1)
    assert ready["status"] == "False"
    assert "waiting for InferenceService not-yet" in ready["message"]
    # The router answers meanwhile, naming the step that is not there.
    code, _, answer = post(graphs, "/v1/models/waiting:predict", {"instances": [SETOSA]})
    assert code == 503
    assert "node root, step 1 (not-yet)" in answer["error"]
    assert "not-yet is not deployed" in answer["error"]
    graphs.client.delete("ig", "default", "waiting")


def test_failing_and_slow_steps_are_named(graphs: RunningPlatform, stand_in: str) -> None:
    steps = {
        "failing-soft": f"""
        - serviceUrl: {stand_in}/fail
          name: soft-failure
        - serviceName: sklearn-iris
          data: $request""",
        "failing-hard": f"""
        - serviceUrl: {stand_in}/fail
          name: hard-failure
          dependency: Hard
        - serviceName: sklearn-iris
          data: $request""",
        "failing-slow": f"""
        - serviceUrl: {stand_in}/slow
          name: too-slow""",
    }
    graphs.apply(
        "---".join(
            f"""
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: {name}
spec:
  routerTimeouts:
    serviceClient: 1
  nodes:
    root:
      routerType: Sequence
      steps:{listed}
"""
            for name, listed in steps.items()
        )
    )
    for name in steps:
        wait_graph(graphs, name)
    request = {"instances": [SETOSA]}
    # Soft: the failure is passed on, and the next step ($request) answers.
    code, _, answer = post(graphs, "/", request, host="failing-soft.default.example.com")
    assert (code, answer) == (200, direct(graphs, "sklearn-iris", [SETOSA]))
    # Hard: the graph stops with the step's answer, naming it.
    code, _, answer = post(graphs, "/", request, host="failing-hard.default.example.com")
    assert code == 500
    assert answer["error"].startswith("node root, step 1 (hard-failure): 500")
    assert "the stand-in model failed" in answer["error"]
    # routerTimeouts.serviceClient: 1 second, and the step would take two.
    started = time.monotonic()
    code, _, answer = post(graphs, "/", request, host="failing-slow.default.example.com")
    assert time.monotonic() - started < 1.9
    assert code == 504
    assert "node root, step 1 (too-slow)" in answer["error"]


def test_bad_bodies_get_a_4xx_and_the_router_survives(graphs: RunningPlatform) -> None:
    host = "model-chainer.default.example.com"
    code, _, answer = post(graphs, "/", b"{not json", host=host)
    # Both steps refuse it; the first is Soft, so the second's answer ($request) is the one.
    assert code == 400
    assert answer["error"].startswith("node root, step 2 (xgboost-iris): 400")
    assert "not valid JSON" in answer["error"]
    # A body over the limit is refused from its Content-Length, before it is read.
    address = ("127.0.0.1", graphs.server.http_port)
    with socket.create_connection(address, timeout=10) as sock:
        head = (
            f"POST / HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {200 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"instances": [[1.0')
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    code, _, answer = post(graphs, "/", {"instances": [SETOSA]}, host=host)
    assert code == 200, answer


def test_invalid_graphs_are_refused_with_the_field_path(graphs: RunningPlatform) -> None:
    cases = {
        "no-root": (
            "nodes:\n    other:\n      routerType: Sequence\n      steps:\n"
            "        - serviceName: sklearn-iris\n",
            "spec.nodes",
        ),
        "unknown-node": (
            "nodes:\n    root:\n      routerType: Sequence\n      steps:\n"
            "        - nodeName: nowhere\n",
            "spec.nodes.root.steps[0].nodeName",
        ),
        "cycle": (
            "nodes:\n    root:\n      routerType: Sequence\n      steps:\n"
            "        - nodeName: back\n    back:\n      routerType: Sequence\n"
            "      steps:\n        - nodeName: root\n",
            "cycle",
        ),
        "weights": (
            "nodes:\n    root:\n      routerType: Splitter\n      steps:\n"
            "        - serviceName: sklearn-iris\n          weight: 70\n",
            "spec.nodes.root",
        ),
    }
    for name, (spec, path) in cases.items():
        text = (
            "apiVersion: serving.kserve.io/v1alpha1\nkind: InferenceGraph\n"
            f"metadata:\n  name: {name}\nspec:\n  {spec}"
        )
        with pytest.raises(ModelhostError) as refused:
            graphs.apply(text)
        assert getattr(refused.value, "status_code", None) == 400, name
        assert path in str(refused.value), (name, str(refused.value))
    # A graph may not take a service's name: they would share a host.
    clash = SEQUENCE.replace("name: model-chainer", "name: sklearn-iris")
    with pytest.raises(ModelhostError) as refused:
        graphs.apply(clash)
    assert getattr(refused.value, "status_code", None) == 400
    assert "share its host" in str(refused.value)
    assert {i["metadata"]["name"] for i in graphs.client.list_objects("ig", "default")}.isdisjoint(
        cases
    )


def test_router_metrics_per_node_and_step(graphs: RunningPlatform) -> None:
    post(graphs, "/", {"instances": [SETOSA]}, host="ensemble-model.default.example.com")
    revisions = graphs.client.revisions("default", "ensemble-model", "ig")
    if graphs.server.settings.graph_router == "in-process":
        assert revisions == []  # no replica: the router is in the gateway
        text = graphs.metrics()
    else:
        port = revisions[0]["replicas"][0]["httpPort"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    assert 'modelhost_graph_node_requests_total{graph="ensemble-model",node="root"}' in text
    assert 'name="always-two"' in text
    assert "modelhost_graph_step_duration_seconds_bucket" in text


def test_cli_get_describe_and_delete_ig(
    graphs: RunningPlatform, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelhost.cli import main

    server = ["--server", graphs.server.api_address]
    assert main(["get", "ig", *server]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "URL", "READY", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["model-chainer"][1:3] == ["http://model-chainer.default.example.com", "True"]
    assert main(["describe", "ig", "ensemble-model", *server]) == 0
    described = capsys.readouterr().out
    assert "kind: InferenceGraph" in described
    if graphs.server.settings.graph_router == "replica":
        assert "router  ensemble-model-" in described
    if graphs.server.settings.graph_router == "replica":
        assert main(["logs", "ig/ensemble-model", *server]) == 0
        assert "serving HTTP on" in capsys.readouterr().out
    extra = tmp_path / "extra.yaml"
    extra.write_text(ENSEMBLE.replace("ensemble-model", "short-lived"))
    assert main(["apply", "-f", str(extra), "--wait", "--timeout", "60", *server]) == 0
    assert "inferencegraph/short-lived ready at http://short-lived.default.example.com" in (
        capsys.readouterr().out
    )
    assert main(["delete", "ig", "short-lived", *server]) == 0
    assert 'inferencegraph.serving.kserve.io "short-lived" deleted' in capsys.readouterr().out
    code, _, _ = post(graphs, "/", {"instances": [SETOSA]}, host="short-lived.default.example.com")
    assert code == 404


def test_the_readme_graph_example(graphs: RunningPlatform) -> None:
    example = (Path(__file__).parents[2] / "examples" / "iris-graph.yaml").read_text()
    graphs.apply(
        example.replace("./models/iris", "gs://kfserving-examples/models/sklearn/1.0/model")
    )
    for name in ("iris-small", "iris-large"):
        graphs.wait_ready(name)
    wait_graph(graphs, "iris-router")
    host = "iris-router.default.example.com"
    for instance in ([6.8, 2.8, 4.8, 1.4], SETOSA):
        code, _, answer = post(graphs, "/", {"instances": [instance]}, host=host)
        assert (code, answer) == (200, direct(graphs, "sklearn-iris", [instance]))
    for name in ("iris-router", "iris-small", "iris-large"):
        graphs.client.delete("ig" if name == "iris-router" else "isvc", "default", name)
