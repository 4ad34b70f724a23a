"""Drift against a reference tag: the tests' p-values match scipy's, and they fire when shifted."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from scipy import stats

from modelhost.trust.drift import jensen_shannon, ks_pvalue, welch_pvalue
from tests.trust.trust_support import MODEL, credit_rows, log_inferences, trust_client


def test_welch_and_ks_p_values_equal_scipys() -> None:
    rng = np.random.default_rng(21)
    for shift in (0.0, 0.1, 0.3):
        a, b = rng.normal(0, 1, 300), rng.normal(shift, 1.5, 200)
        welch = stats.ttest_ind(a, b, equal_var=False).pvalue
        ks = stats.ks_2samp(a, b, method="asymp").pvalue
        assert welch_pvalue(a, b) == pytest.approx(welch, rel=1e-6, abs=1e-12)
        # scipy's asymptotic p-value uses the plain statistic; ours Stephens' small-sample
        # correction (as Numerical Recipes): they agree to a few percent.
        assert ks_pvalue(a, b) == pytest.approx(ks, rel=0.1, abs=0.01)


def test_jensen_shannon_is_zero_for_the_same_sample_and_one_for_disjoint_ones() -> None:
    a = np.arange(100.0)
    assert jensen_shannon(a, a) == pytest.approx(0.0)
    assert jensen_shannon(a, a + 1000.0) == pytest.approx(1.0)


async def _drift(client: httpx.AsyncClient, metric: str, body: dict[str, Any]) -> Any:
    response = await client.post(f"/metrics/drift/{metric}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "metric", ["meanshift", "kstest", "approxkstest", "fouriermmd", "jensenshannon", "mmd"]
)
async def test_drift_fires_on_a_shifted_slice_and_not_on_an_unshifted_one(metric: str) -> None:
    reference, reference_approved = credit_rows(300, seed=31)
    same, same_approved = credit_rows(300, seed=32)
    shifted, shifted_approved = credit_rows(300, seed=33)
    shifted[:, 2] += 20_000.0  # incomes up by more than one standard deviation
    body = {
        "modelId": MODEL,
        "referenceTag": "TRAINING",
        "fitColumns": ["features-2"],
        "batchSize": 300,
    }
    async with trust_client() as (client, _, _):
        await log_inferences(client, reference, reference_approved, "ref")
        tagged = await client.post(
            "/info/tags", json={"modelId": MODEL, "dataTagging": {"TRAINING": [[0, 300]]}}
        )
        assert tagged.json()["tagged"] == {"TRAINING": 300}
        await log_inferences(client, same, same_approved, "same")
        quiet = await _drift(client, metric, body)
        await log_inferences(client, shifted, shifted_approved, "shifted")
        loud = await _drift(client, metric, body)
    assert quiet["thresholds"]["outsideBounds"] is False
    assert loud["thresholds"]["outsideBounds"] is True
    assert set(loud["namedValues"]) == {"features-2"}  # one column: MMD's joint key is it too
    assert loud["name"] == metric.upper()


async def test_scheduled_drift_is_exported_per_column() -> None:
    reference, approved = credit_rows(100, seed=41)
    async with trust_client() as (client, app, registry):
        await log_inferences(client, reference, approved, "ref")
        await client.post(
            "/info/tags", json={"modelId": MODEL, "dataTagging": {"TRAINING": [[0, 100]]}}
        )
        created = await client.post(
            "/metrics/drift/kstest/request", json={"modelId": MODEL, "referenceTag": "TRAINING"}
        )
        assert created.status_code == 200, created.text
        shifted, shifted_approved = credit_rows(100, seed=42)
        shifted[:, 0] += 30.0
        await log_inferences(client, shifted, shifted_approved, "new")
        await app.settled()
    request_id = created.json()["requestId"]
    values = {
        sample.labels["subcategory"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "trustyai_kstest" and sample.labels["request"] == request_id
    }
    assert set(values) == {"features-0", "features-1", "features-2"}
    assert values["features-0"] < 0.05


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"modelId": MODEL}, 400, "referenceTag"),
        ({"modelId": MODEL, "referenceTag": "NOPE"}, 400, "NOPE"),
        ({"modelId": "ghost", "referenceTag": "TRAINING"}, 404, "ghost"),
        ({"modelId": MODEL, "referenceTag": "TRAINING", "fitColumns": ["zzz"]}, 400, "zzz"),
    ],
)
async def test_bad_drift_requests_are_4xx(body: dict[str, object], status: int, words: str) -> None:
    rows, approved = credit_rows(20, seed=51)
    async with trust_client() as (client, _, _):
        await log_inferences(client, rows, approved, "r")
        await client.post(
            "/info/tags", json={"modelId": MODEL, "dataTagging": {"TRAINING": [[0, 10]]}}
        )
        response = await client.post("/metrics/drift/meanshift", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
