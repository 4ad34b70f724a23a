"""TrustyAI's ``/explainers/local/shap`` and ``/lime`` over stored predictions.

The trust app runs in-process with an in-memory store, fed as KServe's logger feeds it. The
model is a real scikit-learn model, called through a :class:`ModelCaller` that runs it in
this process: the platform's caller needs replicas (``modelhost.local.trust_host``), which
are too slow to start for these tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LogisticRegression
from trust_support import MODEL, credit_rows, log_inferences, name_gender

from modelhost import errors
from modelhost.trust import TrustApp, TrustSettings, TrustStore
from modelhost.trust.explainers.caller import ModelTarget


class SklearnCaller:
    """Calls a fitted classifier's probability of approval; counts the rows it is asked."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.calls: list[ModelTarget] = []

    async def __call__(self, model: ModelTarget, inputs: np.ndarray[Any, Any]) -> Any:
        if model.name != MODEL:
            raise errors.ModelNotFound(model.name)
        self.calls.append(model)
        return self.estimator.predict_proba(inputs)[:, 1]


@pytest.fixture
def fitted() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], LogisticRegression]:
    features, approved = credit_rows(60, seed=3)
    scaled = features / [100.0, 1.0, 100_000.0]
    return features, approved, LogisticRegression().fit(scaled, approved)


def explain_body(prediction_id: str, model: str = MODEL, **explainer: Any) -> dict[str, Any]:
    return {
        "predictionId": prediction_id,
        "config": {
            "model": {"target": "credit.default:8033", "name": model, "version": "v1"},
            "explainer": explainer,
        },
    }


class ScaledCaller(SklearnCaller):
    async def __call__(self, model: ModelTarget, inputs: np.ndarray[Any, Any]) -> Any:
        return await super().__call__(model, inputs / [100.0, 1.0, 100_000.0])


async def test_shap_of_a_stored_prediction_adds_up_to_the_model_output(fitted: Any) -> None:
    features, approved, estimator = fitted
    caller = ScaledCaller(estimator)
    app = TrustApp(TrustStore(":memory:"), _registry(), TrustSettings(), caller)
    async with client_of(app) as client:
        await log_inferences(client, features, approved, "loan")
        await name_gender(client)
        answer = await client.post("/explainers/local/shap", json=explain_body("loan-7"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["type"] == "explanation"
        assert body["predictionId"] == "loan-7"
        saliencies = body["saliencies"]["approved"]
        assert [s["name"] for s in saliencies] == ["age", "gender", "income"]
        # The inputs were logged as the v2 tensor "features": that is what the model is sent.
        assert caller.calls[0].input_name == "features"
        output = estimator.predict_proba(features[7:8] / [100.0, 1.0, 100_000.0])[0, 1]
        total = sum(s["score"] for s in saliencies)
        assert total == pytest.approx(output - body["baselines"]["approved"], abs=1e-6)
        # Asked again about the same data: answered from the cache, the model is not called.
        calls = len(caller.calls)
        again = await client.post("/explainers/local/shap", json=explain_body("loan-7"))
        assert again.json()["saliencies"] == body["saliencies"]
        assert len(caller.calls) == calls


async def test_lime_of_a_stored_prediction_weighs_every_feature(fitted: Any) -> None:
    features, approved, estimator = fitted
    app = TrustApp(TrustStore(":memory:"), _registry(), TrustSettings(), ScaledCaller(estimator))
    async with client_of(app) as client:
        await log_inferences(client, features, approved, "loan")
        answer = await client.post(
            "/explainers/local/lime", json=explain_body("loan-3", n_samples=200)
        )
        assert answer.status_code == 200, answer.text
        saliencies = answer.json()["saliencies"]["approved"]
        assert [s["name"] for s in saliencies] == ["features-0", "features-1", "features-2"]
        assert all(isinstance(s["score"], float) for s in saliencies)


async def test_unknown_predictions_models_and_bad_bodies_are_client_errors(fitted: Any) -> None:
    features, approved, estimator = fitted
    app = TrustApp(TrustStore(":memory:"), _registry(), TrustSettings(), ScaledCaller(estimator))
    async with client_of(app) as client:
        await log_inferences(client, features[:5], approved[:5], "loan")
        unknown_id = await client.post("/explainers/local/shap", json=explain_body("nope"))
        assert unknown_id.status_code == 404
        assert "nope" in unknown_id.json()["error"]
        unknown_model = await client.post(
            "/explainers/local/lime", json=explain_body("loan-1", model="other")
        )
        assert unknown_model.status_code == 404
        bad_bodies: list[Any] = [
            [],
            {"config": explain_body("loan-1")["config"]},
            {"predictionId": "loan-1"},
            explain_body("loan-1", n_samples=0),
            explain_body("loan-1", link="probit"),
        ]
        for body in bad_bodies:
            answer = await client.post("/explainers/local/shap", json=body)
            assert answer.status_code == 400, (body, answer.text)


async def test_a_stored_model_the_caller_cannot_reach_is_not_found(fitted: Any) -> None:
    features, approved, _ = fitted

    async def unreachable(model: ModelTarget, inputs: np.ndarray[Any, Any]) -> Any:
        raise errors.ModelNotFound(model.name)

    app = TrustApp(TrustStore(":memory:"), _registry(), TrustSettings(), unreachable)
    async with client_of(app) as client:
        await log_inferences(client, features[:5], approved[:5], "loan")
        answer = await client.post("/explainers/local/shap", json=explain_body("loan-1"))
        assert answer.status_code == 404
        assert MODEL in answer.json()["error"]


def _registry() -> CollectorRegistry:
    return CollectorRegistry()


@asynccontextmanager
async def client_of(app: TrustApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trust") as client:
        yield client
    await app.settled()
