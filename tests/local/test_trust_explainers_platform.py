"""TrustyAI's local explainers on the embedded platform: a logged prediction, explained.

A real platform and replica (the iris logistic regression from the GCS emulator, v2) logs
its traffic into the platform's trust store; ``/explainers/local/shap`` and ``/lime`` at the
gateway explain one stored prediction by calling the service's replica again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from platform_fixtures import RunningPlatform
from trust_platform_support import SERVICE

ROWS = [[5.0 + i / 10, 3.0, 1.4 + (i % 5), 0.2 + (i % 3)] for i in range(20)]


def call(
    platform: RunningPlatform,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    request = urllib.request.Request(
        platform.url + path, data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as failed:
        return failed.code, json.loads(failed.read() or b"null")


def infer(platform: RunningPlatform, row: list[float], request_id: str) -> float:
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    status, answer = call(platform, "/v2/models/credit/infer", body, {"x-request-id": request_id})
    assert status == 200, answer
    return float(answer["outputs"][0]["data"][0])


def observations(platform: RunningPlatform) -> int:
    with urllib.request.urlopen(platform.url + "/info", timeout=30) as response:
        info = json.loads(response.read())
    return int(((info.get("credit") or {}).get("data") or {}).get("observations") or 0)


def explain_body(prediction_id: str, model: str = "credit") -> dict[str, Any]:
    return {
        "predictionId": prediction_id,
        "config": {"model": {"target": "credit.default:8081", "name": model, "version": "v1"}},
    }


def test_a_logged_prediction_is_explained_through_the_service(
    platform: RunningPlatform,
) -> None:
    platform.apply(SERVICE)
    platform.wait_ready("credit")
    outputs = [infer(platform, row, f"loan-{i}") for i, row in enumerate(ROWS)]
    deadline = time.monotonic() + 30
    while observations(platform) < len(ROWS) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert observations(platform) == len(ROWS)

    status, shap = call(platform, "/explainers/local/shap", explain_body("loan-13"))
    assert status == 200, shap
    saliencies = shap["saliencies"]["output-0"]
    assert [s["name"] for s in saliencies] == [f"input-0-{k}" for k in range(4)]
    # Kernel SHAP over 4 features enumerates every coalition: the identity is exact.
    total = sum(s["score"] for s in saliencies)
    assert abs(total - (outputs[13] - shap["baselines"]["output-0"])) < 1e-6

    status, lime = call(platform, "/explainers/local/lime", explain_body("loan-2"))
    assert status == 200, lime
    assert len(lime["saliencies"]["output-0"]) == 4
    # The explainers' own calls to the model are not logged as traffic.
    assert observations(platform) == len(ROWS)

    status, refused = call(platform, "/explainers/local/shap", explain_body("nope"))
    assert status == 404, refused
    assert "nope" in refused["error"]
    status, refused = call(platform, "/explainers/local/lime", explain_body("loan-2", "other"))
    assert status == 404, refused
    status, refused = call(platform, "/explainers/local/shap", {"predictionId": "loan-2"})
    assert status == 400, refused
