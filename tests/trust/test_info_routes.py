"""TrustyAI's listing routes: the stored prediction ids of a model, every scheduled request."""

from __future__ import annotations

from tests.trust.trust_support import MODEL, credit_rows, log_inferences, spd_body, trust_client


async def test_inference_ids_list_the_logged_predictions_oldest_first() -> None:
    features, approved = credit_rows(5, seed=1)
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "p")
        answer = await client.get(f"/info/inference/ids/{MODEL}", params={"type": "organic"})
        assert answer.status_code == 200, answer.text
        assert [entry["id"] for entry in answer.json()] == [f"p-{i}" for i in range(5)]
        assert all(entry["timestamp"].endswith("+00:00") for entry in answer.json())
        assert (await client.get(f"/info/inference/ids/{MODEL}")).json() == answer.json()
        unknown = await client.get("/info/inference/ids/nobody")
        assert unknown.status_code == 404
        assert "nobody" in unknown.json()["error"]
        bad = await client.get(f"/info/inference/ids/{MODEL}", params={"type": "some"})
        assert bad.status_code == 400


async def test_all_requests_lists_fairness_and_drift_requests() -> None:
    features, approved = credit_rows(20, seed=2)
    async with trust_client() as (client, _, _):
        await log_inferences(client, features, approved, "q")
        await client.post(
            "/info/names",
            json={"modelId": MODEL, "inputMapping": {"features-1": "gender"}},
        )
        await client.post(
            "/info/tags", json={"modelId": MODEL, "dataTagging": {"TRAINING": [[0, 10]]}}
        )
        spd = await client.post("/metrics/group/fairness/spd/request", json=spd_body())
        drift = await client.post(
            "/metrics/drift/kstest/request", json={"modelId": MODEL, "referenceTag": "TRAINING"}
        )
        assert spd.status_code == 200, spd.text
        assert drift.status_code == 200, drift.text
        listed = (await client.get("/metrics/all/requests")).json()["requests"]
        by_id = {entry["id"]: entry["request"]["metricName"] for entry in listed}
        assert by_id == {spd.json()["requestId"]: "SPD", drift.json()["requestId"]: "KSTEST"}
