"""The platform's doors: the control API apart from the gateway, tokens on both, the audit log."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from conftest import SAMPLE_OBJECTS  # noqa: F401 - the buckets the sample reads
from platform_fixtures import RunningPlatform, start_platform, stop_platform
from storage_servers import GcsServer
from tritonclient.utils import InferenceServerException

from modelhost import errors
from modelhost.access import Role, TokenStore
from modelhost.local.client import PlatformClient

SAMPLES = Path(__file__).resolve().parents[1] / "control" / "samples"
HOST = "sklearn-iris.default.example.com"
ROW = [6.8, 2.8, 4.8, 1.4]
CUSTOM = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: custom
spec:
  predictor:
    containers:
      - name: kserve-container
        command: ["python3", "-c", "import os; os.system('id')"]
"""
MODEL_CLASS = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: classy
spec:
  predictor:
    sklearn:
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
      args: ["--model_class", "evil:Model"]
"""
RUNTIME = """
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: my-runtime
spec:
  supportedModelFormats:
    - name: mine
      autoSelect: true
  containers:
    - name: kserve-container
      command: ["python3", "my_server.py"]
"""


@pytest.fixture
def guarded(tmp_path: Path, sample_buckets: GcsServer) -> Iterator[RunningPlatform]:
    """A platform with tokens on its gateway and its control API on loopback TCP too."""
    running = start_platform(
        tmp_path / "home",
        replica_env={**sample_buckets.env(), "MODELHOST_CACHE_DIR": str(tmp_path / "cache")},
        access={"auth": "tokens", "api_port": 0},
    )
    yield running
    stop_platform(running)


def tokens(platform: RunningPlatform) -> TokenStore:
    return TokenStore(platform.home / "tokens.db")


def api(platform: RunningPlatform, token: str | None) -> PlatformClient:
    url = platform.server.api_url
    assert url is not None
    return PlatformClient(url, timeout=30, token=token)


def status_of(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except errors.ModelhostError as exc:
        return exc.status_code
    return 200


def test_the_control_api_is_not_on_the_gateway(guarded: RunningPlatform) -> None:
    address = json.loads((guarded.home / "platform.json").read_text())
    assert address["api"].startswith("unix:")
    assert address["auth"] == "tokens"
    socket_path = Path(address["api"].removeprefix("unix:"))
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    _, admin = tokens(guarded).create(Role.ADMIN)
    list_path = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
    on_gateway = httpx.get(guarded.url + list_path, headers={"Authorization": f"Bearer {admin}"})
    assert on_gateway.status_code == 404
    apply = httpx.post(
        guarded.url + "/apis/modelhost.io/v1/apply",
        content=CUSTOM,
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert apply.status_code == 404
    assert guarded.client.list_objects("isvc", "default") == []  # the owner's socket


def test_tcp_control_api_roles(guarded: RunningPlatform) -> None:
    store = tokens(guarded)
    _, caller = store.create(Role.CALLER, name="the-caller")
    _, deployer = store.create(Role.DEPLOYER, name="the-deployer")
    _, team = store.create(Role.DEPLOYER, name="team-b", namespace="team-b")
    _, admin = store.create(Role.ADMIN, name="the-admin")
    sample = (SAMPLES / "sklearn-iris-v1.yaml").read_bytes()
    assert status_of(lambda: api(guarded, None).list_objects("isvc", "default")) == 401
    assert status_of(lambda: api(guarded, "mh_0_x").list_objects("isvc", "default")) == 401
    assert status_of(lambda: api(guarded, caller).list_objects("isvc", "default")) == 403
    assert api(guarded, deployer).list_objects("isvc", "default") == []
    assert status_of(lambda: api(guarded, team).apply(sample, "iris.yaml")) == 403
    with pytest.raises(errors.ModelhostError) as denied:
        api(guarded, deployer).apply(CUSTOM.encode(), "custom.yaml")
    assert denied.value.status_code == 403
    assert "spec.predictor.containers" in str(denied.value)
    assert "only an admin token" in str(denied.value)
    with pytest.raises(errors.ModelhostError, match="--model_class") as classy:
        api(guarded, deployer).apply(MODEL_CLASS.encode(), "classy.yaml")
    assert classy.value.status_code == 403
    assert status_of(lambda: api(guarded, deployer).apply(RUNTIME.encode(), "rt.yaml")) == 403
    [applied] = api(guarded, deployer).apply(sample, "iris.yaml")
    assert applied["result"] == "created"
    [runtime] = api(guarded, admin).apply(RUNTIME.encode(), "rt.yaml")
    assert runtime["result"] == "created"
    assert (
        status_of(lambda: api(guarded, deployer).delete("isvc", "default", "sklearn-iris")) == 200
    )
    log = [json.loads(line) for line in (guarded.home / "audit.log").read_text().splitlines()]
    by_who = {(e["who"], e["status"]) for e in log}
    assert ("the-caller", 403) in by_who
    assert ("the-admin", 200) in by_who
    assert ("unauthenticated", 401) in by_who
    refused = next(e for e in log if e["who"] == "the-deployer" and e["status"] == 403)
    assert refused["outcome"] == "denied"
    assert "containers" in refused["message"]
    created = next(
        e for e in log if e["who"] == "the-deployer" and e["status"] == 200 and e["objects"]
    )
    assert created["objects"] == ["InferenceService/default/sklearn-iris"]
    assert all(admin not in line for line in (guarded.home / "audit.log").read_text().splitlines())


def test_gateway_tokens_rest_and_grpc(guarded: RunningPlatform) -> None:
    guarded.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    guarded.wait_ready("sklearn-iris")
    store = tokens(guarded)
    _, for_iris = store.create(Role.CALLER, service="sklearn-iris", namespace="default")
    _, for_other = store.create(Role.CALLER, service="other")
    _, gone_namespace = store.create(Role.CALLER, namespace="deleted-team")
    body = {"instances": [ROW]}
    path = "/v1/models/sklearn-iris:predict"
    with httpx.Client(base_url=guarded.url, timeout=30, headers={"Host": HOST}) as client:
        refused = client.post(path, json=body)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="modelhost"'
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 200
        assert client.get("/metrics", headers={"Host": "localhost"}).status_code == 401
        ok = client.post(path, json=body, headers={"Authorization": f"Bearer {for_iris}"})
        assert ok.json() == {"predictions": [1]}
        other = client.post(path, json=body, headers={"Authorization": f"Bearer {for_other}"})
        assert other.status_code == 403
        gone = client.post(path, json=body, headers={"Authorization": f"Bearer {gone_namespace}"})
        assert gone.status_code == 403
        assert "deleted-team" in gone.json()["error"]
        nowhere = client.post(
            "/v1/models/nothing:predict",
            json=body,
            headers={"Host": "x.example.com", "Authorization": f"Bearer {for_other}"},
        )
        assert nowhere.status_code == 403
    tensor = tgrpc.InferInput("input-0", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.asarray([ROW], dtype=np.float64))
    with tgrpc.InferenceServerClient(guarded.grpc_address) as client:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as exc:
            client.infer("sklearn-iris", [tensor])
        assert "UNAUTHENTICATED" in str(exc.value.status())
        with pytest.raises(InferenceServerException) as exc:
            client.infer("sklearn-iris", [tensor], headers={"authorization": f"Bearer {for_other}"})
        assert "PERMISSION_DENIED" in str(exc.value.status())
        result = client.infer(
            "sklearn-iris", [tensor], headers={"authorization": f"Bearer {for_iris}"}
        )
        assert result.as_numpy("output-0").tolist() == [1]
