"""The trust app over a real socket (uvicorn), its limits and routing, and fuzzed ingest."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from serving import serve_asgi

from modelhost.trust import TrustApp, TrustSettings, TrustStore
from tests.trust.trust_support import (
    MODEL,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    logger_headers,
    trust_client,
    v2_request,
    v2_response,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A TrustApp on a file-backed store under uvicorn, on a free loopback port."""
    app = TrustApp(
        TrustStore(str(tmp_path / "trust.sqlite")),
        CollectorRegistry(),
        TrustSettings(max_body_bytes=4096),
    )
    with serve_asgi(app) as port:
        yield f"http://127.0.0.1:{port}"


def _structured(event_id: str, event_type: str, data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": "test",
        "inferenceservicename": MODEL,
        "datacontenttype": "application/json",
        "data": data,
    }


def test_logged_events_over_a_socket_are_stored_and_info_shows_them(served: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as client:
        for i in range(5):
            for event_type, body in (
                (REQUEST_TYPE, v2_request([[30.0 + i, i % 2, 40_000.0]])),
                (RESPONSE_TYPE, v2_response([i % 2])),
            ):
                response = client.post(
                    "/", content=body, headers=logger_headers(f"e{i}", event_type)
                )
                assert response.status_code == 200, response.text
        info = client.get("/info").json()[MODEL]["data"]
        tags = client.get("/info/tags").json()
        too_big = client.post("/data/upload", content=b"x" * 5000)
        missing = client.get("/nowhere")
        wrong_method = client.get("/metrics/group/fairness/spd")
    assert info["observations"] == 5
    assert list(info["inputSchema"]["items"]) == ["features-0", "features-1", "features-2"]
    assert info["outputSchema"]["items"]["approved"]["type"] == "DOUBLE"
    assert tags == {MODEL: {"_trustyai_unlabeled": 5}}
    assert too_big.status_code == 413
    assert missing.status_code == 404
    assert wrong_method.status_code == 405


async def test_a_batch_with_malformed_events_keeps_the_good_ones() -> None:
    good = [
        _structured("g1", REQUEST_TYPE, orjson.loads(v2_request([[1.0, 0.0, 2.0]]))),
        _structured("g1", RESPONSE_TYPE, orjson.loads(v2_response([1]))),
    ]
    bad = [
        _structured("b1", "com.example.other", {}),
        {"id": "b2", "type": REQUEST_TYPE},  # no specversion
        _structured("b3", REQUEST_TYPE, {"inputs": [{"name": "x", "shape": [2], "data": [1]}]}),
        "not an event",
    ]
    headers = {"content-type": "application/cloudevents-batch+json"}
    async with trust_client() as (client, _, _):
        response = await client.post(
            "/", content=orjson.dumps([bad[0], *good, *bad[1:]]), headers=headers
        )
        alone = await client.post(
            "/", content=b"{not json", headers=logger_headers("x", REQUEST_TYPE)
        )
        info = (await client.get("/info")).json()
    assert response.status_code == 400
    refused = response.json()["refused"]
    assert [r["index"] for r in refused] == [0, 3, 4, 5]
    assert "com.example.other" in refused[0]["error"]
    assert "specversion" in refused[1]["error"]
    assert "has 1 values for shape" in refused[2]["error"]
    assert response.json()["stored"] == 1
    assert info[MODEL]["data"]["observations"] == 1
    assert alone.status_code == 400
    assert "not valid JSON" in alone.json()["error"]


async def test_the_consumer_route_and_uploads_store_rows() -> None:
    request = orjson.loads(v2_request([[1.0, 0.0, 2.0], [3.0, 1.0, 4.0]]))
    response = orjson.loads(v2_response([0, 1]))
    async with trust_client() as (client, _, _):
        first = await client.post(
            "/consumer/kserve/v2",
            json={"modelid": MODEL, "kind": "response", "id": "p1", "data": response},
        )
        second = await client.post(
            "/consumer/kserve/v2",
            json={"modelid": MODEL, "kind": "request", "id": "p1", "data": request},
        )
        upload = await client.post(
            "/data/upload",
            json={
                "model_name": MODEL,
                "data_tag": "TRAINING",
                "request": request,
                "response": response,
            },
        )
        mismatched = await client.post(
            "/data/upload",
            json={
                "model_name": MODEL,
                "request": {"inputs": [{"name": "q", "shape": [1], "data": [1]}]},
                "response": {"outputs": [{"name": "r", "shape": [1], "data": [1]}]},
            },
        )
        tags = (await client.get("/info/tags")).json()
    assert first.json() == {"stored": 0}  # waits for its request
    assert second.json() == {"stored": 2}
    assert upload.json()["stored"] == 2
    assert mismatched.status_code == 400
    assert "stores columns" in mismatched.json()["error"]
    assert tags == {MODEL: {"TRAINING": 2, "_trustyai_unlabeled": 2}}


async def test_name_mapping_and_tagging_errors_name_what_is_wrong() -> None:
    async with trust_client() as (client, _, _):
        unknown_model = await client.post("/info/names", json={"modelId": "ghost"})
        await client.post(
            "/", content=v2_request([[1.0, 1.0, 1.0]]), headers=logger_headers("a", REQUEST_TYPE)
        )
        await client.post("/", content=v2_response([1]), headers=logger_headers("a", RESPONSE_TYPE))
        unknown_column = await client.post(
            "/info/names", json={"modelId": MODEL, "outputMapping": {"nope": "x"}}
        )
        bad_range = await client.post(
            "/info/tags", json={"modelId": MODEL, "dataTagging": {"T": [[0, 5]]}}
        )
        bad_shape = await client.post(
            "/info/tags", json={"modelId": MODEL, "dataTagging": {"T": [[0, 1, 2]]}}
        )
        named = await client.post(
            "/info/names", json={"modelId": MODEL, "outputMapping": {"approved": "ok"}}
        )
        listed = (await client.get("/info/names")).json()
        cleared = await client.request("DELETE", "/info/names", json={"modelId": MODEL})
        after = (await client.get("/info/names")).json()
    assert unknown_model.status_code == 404
    assert "ghost" in unknown_model.json()["error"]
    assert unknown_column.status_code == 400
    assert "nope" in unknown_column.json()["error"]
    assert bad_range.status_code == 400
    assert "outside" in bad_range.json()["error"]
    assert bad_shape.status_code == 400
    assert named.status_code == 200
    assert listed[MODEL]["outputMapping"] == {"approved": "ok"}
    assert cleared.status_code == 200
    assert after[MODEL]["outputMapping"] == {}


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", ""]),
        "shape": st.lists(st.integers(-1, 3), max_size=3),
        "data": _json_values,
    }
)
_scalars = st.booleans() | st.integers(-3, 3) | st.floats() | st.sampled_from(["a", "b"])
# Tensors that decode, so that rows get stored and later payloads and metrics meet them.
_valid_tensor = st.tuples(
    st.sampled_from(["x", "y"]), st.integers(1, 2), st.lists(_scalars, min_size=2, max_size=2)
).map(lambda t: {"name": t[0], "shape": [1, t[1]] if t[1] > 1 else [1], "data": t[2][: t[1]]})
_bodies = st.one_of(
    _json_values,
    st.fixed_dictionaries({"inputs": st.lists(_valid_tensor, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"outputs": st.lists(_valid_tensor, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=3)}),
    st.fixed_dictionaries({"outputs": st.lists(_tensor, max_size=3)}),
    st.fixed_dictionaries({"instances": _json_values}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(["/", "/consumer/kserve/v2", "/data/upload"]),
    bodies=st.lists(_bodies, min_size=2, max_size=4),
    event_types=st.lists(
        st.sampled_from([REQUEST_TYPE, RESPONSE_TYPE, "other"]), min_size=4, max_size=4
    ),
    kind=st.sampled_from(["request", "response", 3]),
    column=st.sampled_from(["x", "y", "x-0", "outputs", "inputs-0"]),
)
def test_fuzzed_ingest_then_metrics_never_answer_500(
    route: str, bodies: list[Any], event_types: list[str], kind: Any, column: str
) -> None:
    """Several fuzzed payloads to one app (so later ones meet the schema earlier ones fixed),
    then a metric over whatever was stored."""

    async def send() -> list[int]:
        statuses = []
        async with trust_client() as (client, _, _):
            for index, body in enumerate(bodies):
                if route == "/":
                    headers = logger_headers(f"f{index // 2}", event_types[index])
                    response = await client.post("/", content=orjson.dumps(body), headers=headers)
                elif route == "/consumer/kserve/v2":
                    payload = {"modelid": "m", "kind": kind, "id": "f", "data": body}
                    response = await client.post(route, content=orjson.dumps(payload))
                else:
                    upload = {"model_name": "m", "request": body, "response": body}
                    response = await client.post(route, content=orjson.dumps(upload))
                statuses.append(response.status_code)
            for model in (MODEL, "m"):
                spd = {
                    "modelId": model,
                    "protectedAttribute": column,
                    "outcomeName": column,
                    "privilegedAttribute": 1,
                    "unprivilegedAttribute": 0,
                    "favorableOutcome": 1,
                }
                drift = {
                    "modelId": model,
                    "referenceTag": "_trustyai_unlabeled",
                    "fitColumns": [column],
                }
                for path, body in (
                    ("/metrics/group/fairness/dir", spd),
                    ("/metrics/drift/kstest", drift),
                ):
                    statuses.append((await client.post(path, json=body)).status_code)
            statuses.append((await client.get("/info")).status_code)
        return statuses

    assert all(status < 500 for status in asyncio.run(send()))
