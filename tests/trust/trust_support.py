"""Shared helpers for the trust tests: KServe logger events, a credit-style data set, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from modelhost.trust import TrustApp, TrustSettings, TrustStore

MODEL = "credit"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


def logger_headers(event_id: str, event_type: str, model: str = MODEL) -> dict[str, str]:
    """The binary-mode headers KServe's payload logger puts on each event."""
    return {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": event_type,
        "ce-source": f"http://localhost:9081/{model}-predictor",
        "ce-time": "2026-12-06T20:00:00.000000Z",
        "ce-inferenceservicename": model,
        "ce-namespace": "default",
        "ce-component": "predictor",
        "ce-endpoint": "",
    }


def v2_request(features: list[list[float]]) -> bytes:
    """A v2 request with one [rows, 3] tensor: age, gender (0/1), income."""
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [len(features), 3],
                    "datatype": "FP64",
                    "data": [v for row in features for v in row],
                }
            ]
        }
    )


def v2_response(approved: list[int]) -> bytes:
    return orjson.dumps(
        {
            "model_name": MODEL,
            "outputs": [
                {
                    "name": "approved",
                    "shape": [len(approved)],
                    "datatype": "INT64",
                    "data": approved,
                }
            ],
        }
    )


def credit_rows(
    n: int, seed: int, female_approval: float = 0.5, male_approval: float = 0.6
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``n`` applicants (age, gender, income) and their approvals, biased as asked."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    gender = rng.integers(0, 2, n).astype(float)
    income = np.round(rng.normal(50_000, 15_000, n), 2)
    rate = np.where(gender == 1, male_approval, female_approval)
    approved = (rng.random(n) < rate).astype(int)
    return np.column_stack([age, gender, income]), approved


def spd_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "modelId": MODEL,
        "protectedAttribute": "gender",
        "privilegedAttribute": {"type": "DOUBLE", "value": 1},
        "unprivilegedAttribute": {"type": "DOUBLE", "value": 0},
        "outcomeName": "approved",
        "favorableOutcome": {"type": "INT64", "value": 1},
        "batchSize": 1000,
    }
    body.update(overrides)
    return body


@asynccontextmanager
async def trust_client(
    store: TrustStore | None = None, settings: TrustSettings | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, TrustApp, CollectorRegistry]]:
    """An in-process client of a TrustApp over an in-memory store and a fresh registry."""
    registry = CollectorRegistry()
    app = TrustApp(store or TrustStore(":memory:"), registry, settings or TrustSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trust") as client:
        yield client, app, registry
    await app.settled()  # no evaluation left running when the test's loop closes


async def log_inferences(
    client: httpx.AsyncClient,
    features: np.ndarray[Any, Any],
    approved: np.ndarray[Any, Any],
    prefix: str,
) -> None:
    """Send each row as KServe's logger does: a request event, then its response event."""
    for i, (row, label) in enumerate(zip(features.tolist(), approved.tolist(), strict=True)):
        event_id = f"{prefix}-{i}"
        request = await client.post(
            "/", content=v2_request([row]), headers=logger_headers(event_id, REQUEST_TYPE)
        )
        assert request.status_code == 200, request.text
        response = await client.post(
            "/", content=v2_response([label]), headers=logger_headers(event_id, RESPONSE_TYPE)
        )
        assert response.status_code == 200, response.text


async def name_gender(client: httpx.AsyncClient) -> None:
    mapping = {"features-0": "age", "features-1": "gender", "features-2": "income"}
    response = await client.post("/info/names", json={"modelId": MODEL, "inputMapping": mapping})
    assert response.status_code == 200, response.text


def row_request(row: list[float]) -> bytes:
    """A v2 request of one row, tensor ``x`` (FP64): a logged exchange's request body."""
    return orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    )


def label_response(label: int) -> bytes:
    """A v2 response of one label, tensor ``y`` (INT64): a logged exchange's response body."""
    return orjson.dumps(
        {"outputs": [{"name": "y", "shape": [1], "datatype": "INT64", "data": [label]}]}
    )
