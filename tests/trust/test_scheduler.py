"""Scheduled metrics: kept in the store, evaluated as traffic arrives, exported as gauges."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from modelhost.trust import TrustApp, TrustSettings, TrustStore
from tests.trust.trust_support import (
    MODEL,
    credit_rows,
    log_inferences,
    name_gender,
    spd_body,
    trust_client,
)


def _series(registry: CollectorRegistry, name: str, request_id: str) -> float | None:
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and sample.labels.get("request") == request_id:
                return sample.value
    return None


async def test_a_scheduled_spd_is_exported_and_moves_when_biased_rows_arrive() -> None:
    fair, fair_approved = credit_rows(300, seed=11, female_approval=0.5, male_approval=0.5)
    biased, biased_approved = credit_rows(300, seed=12, female_approval=0.1, male_approval=0.9)
    async with trust_client() as (client, app, registry):
        await log_inferences(client, fair, fair_approved, "fair")
        await name_gender(client)
        created = await client.post(
            "/metrics/group/fairness/spd/request", json=spd_body(batchSize=300)
        )
        assert created.status_code == 200, created.text
        request_id = created.json()["requestId"]
        before = _series(registry, "trustyai_spd", request_id)
        await log_inferences(client, biased, biased_approved, "biased")
        await app.settled()  # evaluation runs after the writes, off the request's path
        after = _series(registry, "trustyai_spd", request_id)
        listed = (await client.get("/metrics/group/fairness/spd/requests")).json()["requests"]
        exported = (await client.get("/q/metrics")).text

    assert before is not None
    assert abs(before) < 0.15
    assert after is not None
    assert after < -0.6  # the unprivileged group is now approved far less often
    assert [r["id"] for r in listed] == [request_id]
    assert listed[0]["request"]["metricName"] == "SPD"
    # TrustyAI's label names.
    line = next(x for x in exported.splitlines() if x.startswith("trustyai_spd{"))
    for label in (
        'model="credit"',
        'protected="gender"',
        'outcome="approved"',
        'favorable_value="1"',
        'privileged="1"',
        'unprivileged="0"',
        'batch_size="300"',
        'metricName="SPD"',
        f'request="{request_id}"',
    ):
        assert label in line


async def test_deleting_a_request_removes_its_series_and_unknown_ids_are_404() -> None:
    features, approved = credit_rows(100, seed=13)
    async with trust_client() as (client, _, registry):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        request_id = (
            await client.post("/metrics/group/fairness/dir/request", json=spd_body())
        ).json()["requestId"]
        assert _series(registry, "trustyai_dir", request_id) is not None
        wrong_metric = await client.request(
            "DELETE", "/metrics/group/fairness/spd/request", json={"requestId": request_id}
        )
        deleted = await client.request(
            "DELETE", "/metrics/group/fairness/dir/request", json={"requestId": request_id}
        )
        again = await client.request(
            "DELETE", "/metrics/group/fairness/dir/request", json={"requestId": request_id}
        )
    assert wrong_metric.status_code == 404
    assert deleted.status_code == 200
    assert again.status_code == 404
    assert request_id in again.json()["error"]
    assert _series(registry, "trustyai_dir", request_id) is None


@pytest.mark.parametrize(
    ("overrides", "status"),
    [({"modelId": "ghost"}, 404), ({"outcomeName": "verdict"}, 400), ({"batchSize": -1}, 400)],
)
async def test_a_request_that_cannot_be_evaluated_is_not_kept(
    overrides: dict[str, object], status: int
) -> None:
    features, approved = credit_rows(20, seed=14)
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        response = await client.post(
            "/metrics/group/fairness/spd/request", json=spd_body(**overrides)
        )
        listed = (await client.get("/metrics/group/fairness/spd/requests")).json()
    assert response.status_code == status
    assert listed == {"requests": []}


async def test_requests_survive_a_restart_of_the_app(tmp_path: Path) -> None:
    path = str(tmp_path / "trust.sqlite")
    features, approved = credit_rows(100, seed=15)
    store = TrustStore(path)
    async with trust_client(store) as (client, _, _):
        await log_inferences(client, features, approved, "r")
        await name_gender(client)
        request_id = (
            await client.post("/metrics/group/fairness/spd/request", json=spd_body())
        ).json()["requestId"]
    store.close()

    registry = CollectorRegistry()
    reopened = TrustStore(path)
    app = TrustApp(reopened, registry, TrustSettings())
    app.scheduler.restore()
    assert _series(registry, "trustyai_spd", request_id) is not None
    assert [r["id"] for r in app.scheduler.listed("spd")] == [request_id]
    assert app.scheduler.listed("dir") == []
    assert reopened.models() == [MODEL]
