"""TrustyAI's API on the embedded platform: a logged model's traffic, stored and measured.

A real platform and replica (the iris logistic regression from the GCS emulator, v2), with
KServe's ``logger`` pointed at the platform's built-in sink (``modelhost://trust``); the
requests, TrustyAI's routes and the gateway's ``/metrics`` all go over HTTP to the gateway.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from platform_fixtures import RunningPlatform

SERVICE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: credit
spec:
  predictor:
    logger:
      mode: all
      url: modelhost://trust
    model:
      modelFormat: {name: sklearn}
      protocolVersion: v2
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
"""

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


def test_logged_traffic_is_stored_and_measured(platform: RunningPlatform) -> None:
    platform.apply(SERVICE)
    platform.wait_ready("credit")
    outcomes: dict[float, list[int]] = {7.0: [], 5.0: []}
    for i in range(200):
        group = 7.0 if i % 2 else 5.0
        # The privileged group gets class 0 three times in four, the other one time in four.
        petals = SMALL if (i // 2) % 4 < (3 if group == 7.0 else 1) else LARGE
        outcomes[group].append(infer(platform, [group, 3.0, *petals]))
    # The logger sends off the request path: wait until every pair is stored.
    deadline = time.monotonic() + 30
    while observations(platform) < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert observations(platform) == 200
    request = {
        "modelId": "credit",
        "protectedAttribute": "input-0-0",
        "privilegedAttribute": 7.0,
        "unprivilegedAttribute": 5.0,
        "outcomeName": "output-0",
        "favorableOutcome": 0,
        "batchSize": 1000,
    }
    status, spd = call(platform, "POST", "/metrics/group/fairness/spd", request)
    assert status == 200, spd
    rate = {g: sum(1 for o in found if o == 0) / len(found) for g, found in outcomes.items()}
    assert abs(spd["value"] - (rate[5.0] - rate[7.0])) < 1e-9
    assert spd["thresholds"]["outsideBounds"] is True
    status, dir_ = call(platform, "POST", "/metrics/group/fairness/dir", request)
    assert status == 200, dir_
    assert abs(dir_["value"] - rate[5.0] / rate[7.0]) < 1e-9
    # A scheduled metric joins the gateway's /metrics.
    status, scheduled = call(platform, "POST", "/metrics/group/fairness/spd/request", request)
    assert status == 200, scheduled
    assert scheduled["requestId"]
    deadline = time.monotonic() + 30
    text = ""
    while "trustyai_spd{" not in text and time.monotonic() < deadline:
        text = platform.metrics()
        time.sleep(0.1)
    line = next(line for line in text.splitlines() if line.startswith("trustyai_spd{"))
    assert 'model="credit"' in line
    assert abs(float(line.rsplit(" ", 1)[1]) - (rate[5.0] - rate[7.0])) < 1e-9
    # Bad input through the gateway: a clear 4xx.
    status, refused = call(
        platform, "POST", "/metrics/group/fairness/spd", {**request, "modelId": "nope"}
    )
    assert 400 <= status < 500
    assert "nope" in refused["error"]
