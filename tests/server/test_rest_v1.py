"""KServe's v1 protocol over REST, CloudEvents included, with plain HTTP."""

from __future__ import annotations

import json

import httpx
import pytest
from serving import RunningServer, StartServer
from testmodels import AsyncModel, EchoModel, ExplainModel, UnreadyModel


@pytest.fixture
def server(serve: StartServer) -> RunningServer:
    return serve([EchoModel(), AsyncModel(), ExplainModel("explainer"), UnreadyModel("unready")])


def test_list_and_ready(server: RunningServer) -> None:
    assert httpx.get(f"{server.http_url}/").json() == {"status": "alive"}
    models = httpx.get(f"{server.http_url}/v1/models").json()["models"]
    assert models == ["async", "echo", "explainer", "unready"]
    assert httpx.get(f"{server.http_url}/v1/models/echo").json() == {
        "name": "echo",
        "ready": True,
    }
    unready = httpx.get(f"{server.http_url}/v1/models/unready")
    assert unready.status_code == 503
    assert httpx.get(f"{server.http_url}/v1/models/missing").status_code == 404


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_predict(server: RunningServer, key: str) -> None:
    response = httpx.post(f"{server.http_url}/v1/models/echo:predict", json={key: [[1, 2], [3, 4]]})
    assert response.status_code == 200
    assert response.json() == {"predictions": [[1, 2], [3, 4]]}


def test_async_pipeline_runs_every_step(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.http_url}/v1/models/async:predict", json={"instances": [[1, 2], [3, 4]]}
    )
    assert response.json() == {"predictions": [5, 9], "post": True}


def test_explain(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.http_url}/v1/models/explainer:explain", json={"instances": [[1]]}
    )
    assert response.status_code == 200
    assert response.json() == {"explanations": ["because"]}
    missing = httpx.post(f"{server.http_url}/v1/models/echo:explain", json={"instances": [[1]]})
    assert missing.status_code == 501
    assert "explainer" in missing.json()["error"]


def test_cloudevent_binary_mode(server: RunningServer) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "event-1",
        "ce-source": "tests",
        "ce-type": "org.example.request",
        "content-type": "application/json",
    }
    response = httpx.post(
        f"{server.http_url}/v1/models/echo:predict",
        content=json.dumps({"instances": [[7]]}),
        headers=headers,
    )
    assert response.status_code == 200
    assert response.headers["ce-type"] == "io.kserve.inference.response"
    assert response.headers["ce-source"] == "io.kserve.inference.echo"
    assert response.headers["ce-requestid"] == "event-1"
    assert response.headers["ce-specversion"] == "1.0"
    assert response.json() == {"predictions": [[7]]}


def test_cloudevent_structured_mode(server: RunningServer) -> None:
    event = {
        "specversion": "1.0",
        "id": "event-2",
        "source": "tests",
        "type": "org.example.request",
        "datacontenttype": "application/json",
        "data": {"instances": [[8, 9]]},
    }
    response = httpx.post(
        f"{server.http_url}/v1/models/echo:predict",
        content=json.dumps(event),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/cloudevents+json")
    body = response.json()
    assert body["type"] == "io.kserve.inference.response"
    assert body["requestid"] == "event-2"
    assert body["data"] == {"predictions": [[8, 9]]}


def test_invalid_cloudevent_is_a_400(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.http_url}/v1/models/echo:predict",
        content=b'{"specversion": "1.0"}',
        headers={"content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 400
    assert "CloudEvent" in response.json()["error"]


def test_curl_default_form_type_is_read_as_json(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.http_url}/v1/models/echo:predict",
        content=b'{"instances": [[1]]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == {"predictions": [[1]]}
