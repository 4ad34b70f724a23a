"""TrustyAI's API on the embedded platform: a logged model's traffic, stored and measured.

A real platform and replica (the iris logistic regression from the GCS emulator, v2), with
KServe's ``logger`` pointed at the platform's built-in sink (``modelhost://trust``); the
requests, TrustyAI's routes and the gateway's ``/metrics`` all go over HTTP to the gateway:
1,000 logged requests, SPD and DIR against fairlearn's, a scheduled metric that moves with
biased traffic, and drift that fires on a shifted slice only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fairlearn.metrics import MetricFrame, selection_rate
from platform_fixtures import RunningPlatform
from trust_platform_support import SERVICE

# Two groups by the first feature (7.0 is "privileged"); the model's class depends on the rest.
SMALL = [1.4, 0.2]  # petals of a setosa: class 0
LARGE = [6.1, 2.3]  # petals of a virginica: class 2


def call(platform: RunningPlatform, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(platform.url + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as failed:
        return failed.code, json.loads(failed.read() or b"null")


def infer(platform: RunningPlatform, row: list[float]) -> int:
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    status, answer = call(platform, "POST", "/v2/models/credit/infer", body)
    assert status == 200, answer
    return int(answer["outputs"][0]["data"][0])


def observations(platform: RunningPlatform) -> int:
    status, info = call(platform, "GET", "/info")
    assert status == 200, info
    model = info.get("credit") or {}
    return int((model.get("data") or {}).get("observations") or 0)


def send(platform: RunningPlatform, rows: list[list[float]]) -> list[int]:
    """Each row as one v2 request through the gateway, eight at a time, as clients would."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda row: infer(platform, row), rows))


def wait_stored(platform: RunningPlatform, count: int) -> None:
    # The logger stores off the request path: wait until every exchange is in.
    deadline = time.monotonic() + 30
    while observations(platform) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert observations(platform) == count


def biased(n: int, privileged_rate: float, other_rate: float, seed: int) -> list[list[float]]:
    """Rows whose first feature is the group (7.0 privileged, 5.0 not); the petals decide the
    class, so each group gets class 0 (the favorable outcome) at about its rate."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        group = 7.0 if rng.random() < 0.5 else 5.0
        rate = privileged_rate if group == 7.0 else other_rate
        petals = SMALL if rng.random() < rate else LARGE
        rows.append([group, float(rng.normal(3.0, 0.1)), *petals])
    return rows


def scheduled_value(platform: RunningPlatform, request_id: str) -> float | None:
    for line in platform.metrics().splitlines():
        if line.startswith("trustyai_spd{") and f'request="{request_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def assert_drift(platform: RunningPlatform, drift: dict[str, Any], outside_bounds: bool) -> None:
    """Mean shift and the KS test over the latest 200 rows: both outside bounds, or neither."""
    for metric in ("meanshift", "kstest"):
        status, measured = call(
            platform, "POST", f"/metrics/drift/{metric}", {**drift, "batchSize": 200}
        )
        assert status == 200, measured
        assert measured["thresholds"]["outsideBounds"] is outside_bounds, (metric, measured)


def test_logged_traffic_is_stored_and_measured(platform: RunningPlatform) -> None:
    platform.apply(SERVICE)
    platform.wait_ready("credit")
    rows = biased(1000, privileged_rate=0.75, other_rate=0.25, seed=1)
    outcomes = send(platform, rows)
    wait_stored(platform, 1000)
    request = {
        "modelId": "credit",
        "protectedAttribute": "input-0-0",
        "privilegedAttribute": 7.0,
        "unprivilegedAttribute": 5.0,
        "outcomeName": "output-0",
        "favorableOutcome": 0,
        "batchSize": 1000,
    }
    # fairlearn on the same 1,000 rows: the selection rate of class 0 per group.
    favorable = np.array([1 if o == 0 else 0 for o in outcomes])
    groups = np.array([row[0] for row in rows])
    rates = MetricFrame(
        metrics=selection_rate, y_true=favorable, y_pred=favorable, sensitive_features=groups
    ).by_group
    status, spd = call(platform, "POST", "/metrics/group/fairness/spd", request)
    assert status == 200, spd
    assert abs(spd["value"] - (rates[5.0] - rates[7.0])) < 1e-9
    assert spd["thresholds"]["outsideBounds"] is True
    status, dir_ = call(platform, "POST", "/metrics/group/fairness/dir", request)
    assert status == 200, dir_
    assert abs(dir_["value"] - rates[5.0] / rates[7.0]) < 1e-9

    # A scheduled metric joins the gateway's /metrics, and moves when biased traffic comes.
    status, scheduled = call(
        platform, "POST", "/metrics/group/fairness/spd/request", {**request, "batchSize": 200}
    )
    assert status == 200, scheduled
    request_id = scheduled["requestId"]
    deadline = time.monotonic() + 30
    while scheduled_value(platform, request_id) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    before = scheduled_value(platform, request_id)
    assert before is not None
    send(platform, biased(200, privileged_rate=1.0, other_rate=0.0, seed=2))
    wait_stored(platform, 1200)
    deadline = time.monotonic() + 30
    while scheduled_value(platform, request_id) != -1.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scheduled_value(platform, request_id) == -1.0  # every 5.0 row lost, every 7.0 won

    # Drift against the first 1,000 rows as the reference: quiet, then a shifted slice.
    status, tagged = call(
        platform,
        "POST",
        "/info/tags",
        {"modelId": "credit", "dataTagging": {"TRAINING": [[0, 1000]]}},
    )
    assert status == 200, tagged
    drift = {"modelId": "credit", "referenceTag": "TRAINING", "fitColumns": ["input-0-1"]}
    send(platform, biased(200, 0.75, 0.25, seed=3))
    wait_stored(platform, 1400)
    assert_drift(platform, drift, outside_bounds=False)
    shifted = biased(200, 0.75, 0.25, seed=4)
    for row in shifted:
        row[1] += 0.5  # five standard deviations
    send(platform, shifted)
    wait_stored(platform, 1600)
    assert_drift(platform, drift, outside_bounds=True)

    # Bad input through the gateway: a clear 4xx.
    status, refused = call(
        platform, "POST", "/metrics/group/fairness/spd", {**request, "modelId": "nope"}
    )
    assert 400 <= status < 500
    assert "nope" in refused["error"]
