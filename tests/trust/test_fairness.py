"""SPD and DIR over logged traffic, checked against fairlearn, and every bad request refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fairlearn.metrics import MetricFrame, demographic_parity_difference, selection_rate

from modelhost.trust import TrustStore
from modelhost.trust.store import SYNTHETIC_TAG
from tests.trust.trust_support import (
    MODEL,
    credit_rows,
    log_inferences,
    name_gender,
    spd_body,
    trust_client,
)


async def _metric(client: httpx.AsyncClient, metric: str, body: dict[str, Any]) -> Any:
    response = await client.post(f"/metrics/group/fairness/{metric}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_spd_and_dir_of_1000_logged_requests_equal_fairlearns() -> None:
    features, approved = credit_rows(1000, seed=7, female_approval=0.45, male_approval=0.62)
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "req")
        await name_gender(client)
        spd = await _metric(client, "spd", spd_body())
        dir_ = await _metric(client, "dir", spd_body())
        info = (await client.get("/info")).json()[MODEL]["data"]

    assert info["observations"] == 1000
    assert info["inputSchema"]["nameMapping"]["features-1"] == "gender"
    gender = features[:, 1]
    frame = MetricFrame(
        metrics=selection_rate, y_true=approved, y_pred=approved, sensitive_features=gender
    )
    rates = frame.by_group
    assert spd["value"] == pytest.approx(rates[0.0] - rates[1.0], abs=1e-9)
    assert dir_["value"] == pytest.approx(rates[0.0] / rates[1.0], abs=1e-9)
    assert abs(spd["value"]) == pytest.approx(
        demographic_parity_difference(approved, approved, sensitive_features=gender), abs=1e-9
    )
    # TrustyAI's response shape and default bounds.
    assert spd["name"] == "SPD"
    assert spd["type"] == "metric"
    assert spd["thresholds"]["lowerBound"] == pytest.approx(-0.1)
    assert spd["thresholds"]["upperBound"] == pytest.approx(0.1)
    assert spd["thresholds"]["outsideBounds"] is (abs(spd["value"]) > 0.1)
    assert dir_["thresholds"]["lowerBound"] == pytest.approx(0.8)
    assert dir_["thresholds"]["upperBound"] == pytest.approx(1.2)
    assert "gender" in spd["specificDefinition"]


async def test_batch_size_takes_the_latest_rows_and_threshold_delta_moves_the_bounds() -> None:
    fair, fair_approved = credit_rows(200, seed=1, female_approval=0.6, male_approval=0.6)
    biased, biased_approved = credit_rows(200, seed=2, female_approval=0.1, male_approval=0.9)
    async with trust_client() as (client, _, _):
        await log_inferences(client, fair, fair_approved, "fair")
        await log_inferences(client, biased, biased_approved, "biased")
        await name_gender(client)
        latest = await _metric(client, "spd", spd_body(batchSize=200, thresholdDelta=0.5))
    gender = biased[:, 1]
    expected = biased_approved[gender == 0].mean() - biased_approved[gender == 1].mean()
    assert latest["value"] == pytest.approx(expected, abs=1e-12)
    assert latest["thresholds"]["lowerBound"] == pytest.approx(-0.5)


async def test_plain_values_and_lists_work_as_well_as_trustyais_wrappers() -> None:
    features, approved = credit_rows(100, seed=3)
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        wrapped = await _metric(client, "spd", spd_body())
        plain = await _metric(
            client,
            "spd",
            spd_body(privilegedAttribute=1, unprivilegedAttribute=[0], favorableOutcome=1),
        )
        raw = await _metric(
            client, "spd", spd_body(favorableOutcome={"rawValueNodes": [{"value": 1}]})
        )
    assert wrapped["value"] == plain["value"] == raw["value"]


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"modelId": "nobody"}, 404, "nobody"),
        ({"protectedAttribute": "colour"}, 400, "colour"),
        ({"outcomeName": "verdict"}, 400, "verdict"),
        ({"privilegedAttribute": None}, 400, "privilegedAttribute"),
        ({"unprivilegedAttribute": 1}, 400, "share"),
        ({"unprivilegedAttribute": 7}, 400, "unprivilegedAttribute"),
        ({"batchSize": 0}, 400, "batchSize"),
        ({"thresholdDelta": "wide"}, 400, "thresholdDelta"),
        ({"protectedAttribute": "features-0", "privilegedAttribute": "old"}, 400, "fit"),
    ],
)
async def test_bad_requests_are_4xx_naming_the_field(
    overrides: dict[str, Any], status: int, words: str
) -> None:
    features, approved = credit_rows(50, seed=4)
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        response = await client.post("/metrics/group/fairness/spd", json=spd_body(**overrides))
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


async def test_a_protected_attribute_with_one_group_is_refused() -> None:
    features, approved = credit_rows(40, seed=5)
    features[:, 1] = 1.0
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        response = await client.post("/metrics/group/fairness/dir", json=spd_body())
    assert response.status_code == 400
    assert "one group" in response.json()["error"]


async def test_an_empty_slice_is_refused() -> None:
    features, approved = credit_rows(10, seed=6)
    store = TrustStore(":memory:")
    async with trust_client(store) as (client, _, _):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        reserved = {"_trustyai_synthetic": [[0, 10]]}
        tagged = await client.post("/info/tags", json={"modelId": MODEL, "dataTagging": reserved})
        assert tagged.status_code == 400  # reserved tags are TrustyAI's own
        # Rows an explainer made up are never fairness data: with only those, nothing is left.
        store.tag_rows(MODEL, SYNTHETIC_TAG, [(0, 10)])
        response = await client.post("/metrics/group/fairness/spd", json=spd_body())
    assert response.status_code == 400
    assert "empty" in response.json()["error"]


async def test_definitions_are_served() -> None:
    async with trust_client() as (client, _, _):
        general = await client.get("/metrics/group/fairness/dir/definition")
        specific = await client.post(
            "/metrics/group/fairness/spd/definition", json={**spd_body(), "metricValue": -0.2}
        )
    assert general.status_code == 200
    assert "Disparate Impact Ratio" in general.json()["definition"]
    assert specific.status_code == 200
    assert specific.json()["value"] == -0.2
