"""End to end: KServe's own sample YAML applied unchanged to a real platform on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from platform_fixtures import (
    RunningPlatform,
    is_ready,
    platform_address,
    start_platform,
    stop_platform,
    traffic,
)
from tritonclient.utils import InferenceServerException

from modelhost.cli import main
from modelhost.errors import ModelhostError

SAMPLES = Path(__file__).resolve().parents[1] / "control" / "samples"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def test_kserve_v1_sample_is_served_by_host_and_by_path(platform: RunningPlatform) -> None:
    results = platform.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    assert results == [
        {
            "kind": "InferenceService",
            "namespace": "default",
            "name": "sklearn-iris",
            "result": "created",
        }
    ]
    status = platform.wait_ready("sklearn-iris")
    assert status["url"] == "http://sklearn-iris.default.example.com"
    assert status["clusterServingRuntimeName"] == "kserve-sklearnserver"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "IngressReady": "True",
        "LatestDeploymentReady": "True",
        "PredictorReady": "True",
        "Ready": "True",
    }
    (revision,) = traffic(status)
    assert traffic(status) == {revision: 100}
    assert status["components"]["predictor"]["latestReadyRevision"] == revision

    with httpx.Client(base_url=platform.url, timeout=30) as client:
        by_host = client.post(
            "/v1/models/sklearn-iris:predict",
            json={"instances": ROWS},
            headers={"Host": "sklearn-iris.default.example.com"},
        )
        assert by_host.status_code == 200, by_host.text
        assert by_host.json() == {"predictions": [1, 1]}
        by_path = client.post("/v1/models/sklearn-iris:predict", json={"instances": ROWS})
        assert by_path.json() == {"predictions": [1, 1]}
        # The component's own host reaches the predictor too, as Knative's route does.
        component = client.get(
            "/v1/models/sklearn-iris",
            headers={"Host": "sklearn-iris-predictor.default.example.com"},
        )
        assert component.json() == {"name": "sklearn-iris", "ready": True}
        unknown = client.post("/v1/models/other:predict", json={"instances": ROWS})
        assert unknown.status_code == 404
        assert "no InferenceService serves" in unknown.json()["error"]
        bad = client.post("/v1/models/sklearn-iris:predict", json={"instances": "x"})
        assert bad.status_code == 400  # the replica's own answer, passed through

    metrics = platform.metrics()
    assert f'revision="{revision}"' in metrics
    assert 'modelhost_gateway_replicas{component="predictor"' in metrics


def test_kserve_v2_sample_over_rest_and_grpc(platform: RunningPlatform) -> None:
    platform.apply((SAMPLES / "sklearn-iris-v2.yaml").read_text())
    platform.wait_ready("sklearn-v2-iris")
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        response = client.post(
            "/v2/models/sklearn-v2-iris/infer",
            json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]},
            headers={"Host": "sklearn-v2-iris.default.example.com"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [1, 1]

    client = grpcclient.InferenceServerClient(platform.grpc_address)
    try:
        tensor = grpcclient.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.array(ROWS, dtype=np.float32))
        # By model name, and by KServe's host (what grpcurl -authority sends).
        result = client.infer("sklearn-v2-iris", [tensor])
        assert result.as_numpy("output-0").tolist() == [1, 1]
        hosted = client.infer(
            "sklearn-v2-iris", [tensor], headers={"host": "sklearn-v2-iris.default.example.com"}
        )
        assert hosted.as_numpy("output-0").tolist() == [1, 1]
        assert client.is_model_ready("sklearn-v2-iris")
        with pytest.raises(InferenceServerException, match=r"does not exist"):
            client.infer("no-such-model", [tensor])
    finally:
        client.close()


def test_invalid_object_is_refused_with_its_field_and_not_stored(
    platform: RunningPlatform,
) -> None:
    text = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: broken
spec:
  predictor:
    minReplicas: 3
    maxReplicas: 2
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
"""
    with pytest.raises(ModelhostError) as raised:
        platform.apply(text)
    assert getattr(raised.value, "status_code", None) == 400
    assert "spec.predictor.minReplicas" in str(raised.value)
    assert platform.client.list_objects("isvc", "default") == []
    unknown_format = text.replace("sklearn", "no-such-format").replace("minReplicas: 3", "")
    with pytest.raises(ModelhostError, match="no runtime found"):
        platform.apply(unknown_format.replace("maxReplicas: 2", ""))


def test_an_invalid_inference_graph_refuses_the_whole_file(
    platform: RunningPlatform,
) -> None:
    service = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: first
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
---
"""
    graph = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: pipeline
spec:
  nodes:
    root:
      routerType: Splitter
      steps:
        - serviceName: first
          weight: 70
"""
    with pytest.raises(ModelhostError) as raised:
        platform.apply(service + graph)
    assert getattr(raised.value, "status_code", None) == 400
    assert "spec.nodes.root" in str(raised.value)
    # Nothing in the file was stored, the InferenceService beside the graph included.
    assert platform.client.list_objects("isvc", "default") == []
    assert platform.client.list_objects("ig", "default") == []


def test_cli_verbs_against_the_platform(
    platform: RunningPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = SAMPLES / "sklearn-iris-v1.yaml"
    server = ["--server", platform.server.api_address]
    assert main(["apply", "-f", str(sample), *server]) == 0
    assert "inferenceservice.serving.kserve.io/sklearn-iris created" in capsys.readouterr().out
    assert main(["apply", "-f", str(sample), *server]) == 0
    assert "sklearn-iris unchanged" in capsys.readouterr().out
    platform.wait_ready("sklearn-iris")
    assert main(["get", "isvc", *server]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["NAME", "URL", "READY"]
    assert table[1].split()[:3] == [
        "sklearn-iris",
        "http://sklearn-iris.default.example.com",
        "True",
    ]
    assert main(["get", "isvc", "sklearn-iris", "-o", "json", *server]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metadata"]["generation"] == 1
    assert is_ready(document["status"])
    assert main(["describe", "isvc", "sklearn-iris", *server]) == 0
    described = capsys.readouterr().out
    assert "revisions:" in described
    assert " Ready " in described
    assert main(["logs", "sklearn-iris", *server]) == 0
    assert "modelhost serving sklearn-iris" in capsys.readouterr().out
    pids = [r["pid"] for rev in platform.revisions("sklearn-iris") for r in rev["replicas"]]
    assert main(["delete", "isvc", "sklearn-iris", *server]) == 0
    assert 'inferenceservice.serving.kserve.io "sklearn-iris" deleted' in capsys.readouterr().out
    assert main(["get", "isvc", "sklearn-iris", *server]) == 1
    assert "not found" in capsys.readouterr().err
    for pid in pids:  # the replicas are gone with it
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_services_come_back_after_a_restart(
    tmp_path: Path, sample_buckets: object, platform: RunningPlatform
) -> None:
    platform.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    first = platform.wait_ready("sklearn-iris")
    old_pids = {r["pid"] for rev in platform.revisions("sklearn-iris") for r in rev["replicas"]}
    home = platform.home
    env = {
        "STORAGE_EMULATOR_HOST": sample_buckets.env()["STORAGE_EMULATOR_HOST"],  # type: ignore[attr-defined]
        "MODELHOST_CACHE_DIR": str(tmp_path / "cache"),
    }
    stop_platform(platform)
    assert not (home / "platform.json").exists()
    again = start_platform(home, replica_env=env)
    try:
        assert platform_address(home)["url"] == again.url
        status = again.wait_ready("sklearn-iris")
        assert traffic(status) == traffic(first)
        new_pids = {r["pid"] for rev in again.revisions("sklearn-iris") for r in rev["replicas"]}
        assert new_pids
        assert not new_pids & old_pids
        with httpx.Client(base_url=again.url, timeout=30) as client:
            response = client.post("/v1/models/sklearn-iris:predict", json={"instances": ROWS})
            assert response.json() == {"predictions": [1, 1]}
    finally:
        stop_platform(again)


def test_gateway_edge_cases_head_pipelining_and_malformed(platform: RunningPlatform) -> None:
    import socket

    platform.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    platform.wait_ready("sklearn-iris")
    host = "sklearn-iris.default.example.com"
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        head = client.head("/v2/health/ready", headers={"Host": host})
        assert head.status_code == 200
        after = client.get("/v1/models/sklearn-iris", headers={"Host": host})
        assert after.json() == {"name": "sklearn-iris", "ready": True}
    address = platform.url.removeprefix("http://").split(":")
    with socket.create_connection((address[0], int(address[1])), timeout=30) as sock:
        body = b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'
        one = (
            b"POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nHost: "
            + host.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        sock.sendall(one * 3)  # pipelined: three answers, in order
        received = b""
        while received.count(b'{"predictions":[1]}') < 3:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 3
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400"), answer
