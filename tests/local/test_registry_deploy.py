"""Deploying from the model registry on the embedded platform, end to end.

A real platform; iris models on the moto S3 server, registered with ``modelhost registry
register`` and deployed with ``modelhost registry deploy`` (storageUri
``model-registry://iris/<version>``); predictions through the gateway; the deployments as
the registry records them; and services whose model the registry cannot give.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from platform_fixtures import RunningPlatform, start_platform, stop_platform
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from storage_servers import S3Server, start_s3

from modelhost.cli import main

API = "/api/model_registry/v1"
BUCKET = "registry-models"
ROW = [6.8, 2.8, 4.8, 1.4]  # class 1 for the logistic model; the dummy always answers 2
HOST = "iris.default.example.com"


def _joblib(model: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """The moto S3 server holding iris v2 (logistic) and v3 (always 2)."""
    server = start_s3()
    x, y = load_iris(return_X_y=True)
    server.client().create_bucket(Bucket=BUCKET)
    logistic = LogisticRegression(max_iter=1000).fit(x, y)
    server.upload(BUCKET, {"model.joblib": _joblib(logistic)}, prefix="iris/v2/")
    always_2 = DummyClassifier(strategy="constant", constant=2).fit(x, y)
    server.upload(BUCKET, {"model.joblib": _joblib(always_2)}, prefix="iris/v3/")
    yield server
    server.stop()


@pytest.fixture
def platform(tmp_path: Path, s3: S3Server) -> Iterator[RunningPlatform]:
    running = start_platform(
        tmp_path / "home",
        replica_env={**s3.env(), "MODELHOST_CACHE_DIR": str(tmp_path / "cache")},
    )
    yield running
    stop_platform(running)


def _cli(platform: RunningPlatform, *args: str) -> None:
    where = ["--url", platform.url, "--home", str(platform.home)]
    assert main(["registry", *args, *where]) == 0


def _register(platform: RunningPlatform, version: str, uri: str) -> None:
    _cli(platform, "register", "iris", version, uri, "sklearn", "--license", "BSD-3-Clause")


def _predict(platform: RunningPlatform) -> object:
    response = httpx.post(
        platform.url + "/v1/models/iris:predict",
        json={"instances": [ROW]},
        headers={"Host": HOST},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def _until(check: Callable[[], object], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not reached in {timeout}s")


def _entries(platform: RunningPlatform) -> list[dict[str, Any]]:
    answer = httpx.get(platform.url + API + "/inference_services", timeout=10)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _version_ids(platform: RunningPlatform) -> dict[str, str]:
    answer = httpx.get(platform.url + API + "/registered_models/1/versions", timeout=10)
    return {v["name"]: v["id"] for v in answer.json()["items"]}


def test_a_registered_version_serves_rolls_and_is_recorded(platform: RunningPlatform) -> None:
    _register(platform, "v2", f"s3://{BUCKET}/iris/v2")
    _cli(platform, "deploy", "iris", "v2", "--service", "iris")
    stored = platform.client.get("isvc", "default", "iris")
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "model-registry://iris/v2"
    platform.wait_ready("iris")
    assert _predict(platform) == 1

    _register(platform, "v3", f"s3://{BUCKET}/iris/v3")
    _cli(platform, "deploy", "iris", "v3", "--service", "iris")
    # The new version is a new revision: it rolls out, and then answers.
    assert _until(lambda: _predict(platform) == 2)

    versions = _version_ids(platform)
    uid = platform.client.get("isvc", "default", "iris")["metadata"]["uid"]

    def recorded() -> dict[str, str] | None:
        states = {e["modelVersionId"]: e["desiredState"] for e in _entries(platform)}
        return states if states.get(versions["v2"]) == "UNDEPLOYED" else None

    assert _until(recorded) == {versions["v2"]: "UNDEPLOYED", versions["v3"]: "DEPLOYED"}
    entries = _entries(platform)
    assert {e["name"] for e in entries} == {f"iris/{uid}/{versions[v]}" for v in ("v2", "v3")}
    environments = httpx.get(platform.url + API + "/serving_environments", timeout=10).json()
    assert [e["name"] for e in environments["items"]] == ["default"]
    deployed = next(e for e in entries if e["desiredState"] == "DEPLOYED")
    assert deployed["customProperties"]["url"]["string_value"] == f"http://{HOST}"

    platform.client.delete("isvc", "default", "iris")
    assert {e["desiredState"] for e in _entries(platform)} == {"UNDEPLOYED"}


def _apply(platform: RunningPlatform, name: str, uri: str) -> None:
    platform.apply(
        f"""
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
    model:
      modelFormat: {{name: sklearn}}
      storageUri: {uri}
"""
    )


def _not_ready(platform: RunningPlatform, name: str, timeout: float = 60) -> dict[str, Any]:
    def failed(status: dict[str, Any]) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "False" and c.get("reason")
            for c in status.get("conditions") or ()
            if c.get("reason") != "RevisionMissing"
        )

    status = platform.wait_for(name, failed, timeout=timeout, what="Ready False")
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_a_model_the_registry_cannot_give_shows_in_the_status(platform: RunningPlatform) -> None:
    _register(platform, "v2", f"s3://{BUCKET}/iris/v2")
    _register(platform, "v4", f"s3://{BUCKET}/iris/nothing-here")
    _apply(platform, "no-model", "model-registry://wine/v1")
    _apply(platform, "no-version", "model-registry://iris/v9")
    _apply(platform, "no-files", "model-registry://iris/v4")

    condition = _not_ready(platform, "no-model")
    assert condition["reason"] == "ModelRegistryResolveFailed"
    assert "no registered model 'wine'" in condition["message"]
    condition = _not_ready(platform, "no-version")
    assert condition["reason"] == "ModelRegistryResolveFailed"
    assert "no version 'v9' of model 'iris'" in condition["message"]
    condition = _not_ready(platform, "no-files")
    assert condition["reason"] == "RevisionFailed"
    assert "model-registry://iris/v4 (iris/v4" in condition["message"]
    # Only the service the registry gave a model to is recorded (Kubeflow's controller does
    # not wait for readiness either); the other two name nothing to record.
    entries = _entries(platform)
    assert [(e["name"].split("/")[0], e["desiredState"]) for e in entries] == [
        ("no-files", "DEPLOYED")
    ]


def test_kubeflows_labels_alone_record_a_deployment(platform: RunningPlatform) -> None:
    _register(platform, "v2", f"s3://{BUCKET}/iris/v2")
    versions = _version_ids(platform)
    platform.apply(
        f"""
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: labelled
  labels:
    modelregistry.kubeflow.org/registered-model-id: "1"
    modelregistry.kubeflow.org/model-version-id: "{versions["v2"]}"
spec:
  predictor:
    model:
      modelFormat: {{name: sklearn}}
      runtime: kserve-sklearnserver
      storageUri: s3://{BUCKET}/iris/v2
"""
    )
    uid = platform.client.get("isvc", "default", "labelled")["metadata"]["uid"]
    entries = _until(_entries_now(platform))
    assert isinstance(entries, list)
    assert [(e["name"], e["modelVersionId"], e["runtime"], e["desiredState"]) for e in entries] == [
        (f"labelled/{uid}/{versions['v2']}", versions["v2"], "kserve-sklearnserver", "DEPLOYED")
    ]
    platform.client.delete("isvc", "default", "labelled")
    assert [e["desiredState"] for e in _entries(platform)] == ["UNDEPLOYED"]


def _entries_now(platform: RunningPlatform) -> Callable[[], list[dict[str, Any]]]:
    return lambda: _entries(platform)
