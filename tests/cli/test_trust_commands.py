"""``modelhost trust ...`` against a real ``serve --trust`` on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import RunningServer, StartServer
from testmodels import SumModel

from modelhost.cli import build_parser, main, serve_trust
from modelhost.server.extensions import ServerExtensions
from modelhost.trust.client import typed_value
from tests.trust.trust_support import (
    MODEL,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    credit_rows,
    logger_headers,
    v2_request,
    v2_response,
)


@pytest.fixture
def trusted(serve: StartServer, tmp_path: Path) -> RunningServer:
    args = build_parser().parse_args(
        ["serve", "m", "--trust", "--trust-store", str(tmp_path / "trust.sqlite")]
    )
    mount = serve_trust.trust_mount(args)
    assert mount is not None
    return serve([SumModel("sum")], extensions=ServerExtensions(mounts=(mount,)))


def _log(url: str, rows: np.ndarray, approved: np.ndarray, prefix: str) -> None:
    with httpx.Client(base_url=url) as client:
        for i, (row, label) in enumerate(zip(rows.tolist(), approved.tolist(), strict=True)):
            event = f"{prefix}-{i}"
            for body, kind in (
                (v2_request([row]), REQUEST_TYPE),
                (v2_response([label]), RESPONSE_TYPE),
            ):
                sent = client.post("/", content=body, headers=logger_headers(event, kind))
                assert sent.status_code == 200, sent.text


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["trust", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_bias_check_and_a_drift_alert_from_the_shell(
    trusted: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = trusted.http_url
    rows, approved = credit_rows(200, seed=5, female_approval=0.3, male_approval=0.7)
    _log(url, rows, approved, "train")
    code, out, _ = _run(
        capsys,
        "names",
        MODEL,
        "--input",
        "features-1=gender",
        "--input",
        "features-2=income",
        "--url",
        url,
    )
    assert code == 0, out
    assert _run(capsys, "tag", MODEL, "TRAINING", "0:200", "--url", url)[0] == 0
    code, out, _ = _run(capsys, "info", "--url", url)
    assert code == 0
    assert MODEL in out
    assert "TRAINING=200" in out

    code, out, _ = _run(
        capsys,
        "fairness",
        "spd",
        MODEL,
        "--protected",
        "gender",
        "--privileged",
        "1",
        "--unprivileged",
        "0",
        "--outcome",
        "approved",
        "--favorable",
        "1",
        "--batch-size",
        "200",
        "--url",
        url,
        "-o",
        "json",
    )
    assert code == 0, out
    gender = rows[:, 1]
    expected = approved[gender == 0].mean() - approved[gender == 1].mean()
    answer = json.loads(out)
    assert answer["value"] == pytest.approx(expected, abs=1e-12)
    assert answer["thresholds"]["outsideBounds"] is True

    shifted, shifted_approved = credit_rows(200, seed=6)
    shifted[:, 2] += 25_000.0
    _log(url, shifted, shifted_approved, "live")
    code, out, _ = _run(
        capsys,
        "drift",
        "meanshift",
        MODEL,
        "--columns",
        "income",
        "--batch-size",
        "200",
        "--url",
        url,
    )
    assert code == 0, out
    assert out.startswith("MEANSHIFT = ")
    assert "OUTSIDE the bounds" in out

    code, out, _ = _run(
        capsys, "drift", "kstest", MODEL, "--columns", "income", "--schedule", "--url", url
    )
    assert code == 0
    assert out.startswith("scheduled: ")
    request_id = out.split()[-1]
    code, out, _ = _run(capsys, "requests", "--url", url)
    assert code == 0
    assert request_id in out
    assert "kstest" in out
    assert _run(capsys, "unschedule", "kstest", request_id, "--url", url)[0] == 0
    assert request_id not in _run(capsys, "requests", "--url", url)[1]


def test_errors_are_one_clear_line(
    trusted: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "drift", "kstest", "no-such-model", "--url", trusted.http_url)
    assert code == 1
    assert err.startswith("modelhost trust: ")
    assert "no-such-model" in err
    code, _, err = _run(capsys, "tag", MODEL, "TRAINING", "zero:ten", "--url", trusted.http_url)
    assert code == 1
    assert "START:END" in err


def test_no_platform_and_no_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELHOST_TRUST_URL", raising=False)
    code, _, err = _run(capsys, "info", "--home", str(tmp_path))
    assert code == 1
    assert "give --url" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", {"type": "INT64", "value": 1}),
        ("0.5", {"type": "DOUBLE", "value": 0.5}),
        ("true", {"type": "BOOL", "value": True}),
        ("female", {"type": "STRING", "value": "female"}),
    ],
)
def test_typed_values(text: str, expected: dict[str, object]) -> None:
    assert typed_value(text) == expected
