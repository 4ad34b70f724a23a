"""``modelhost serve --trust``: TrustyAI's API beside the data plane, on one real HTTP port."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import StartServer
from testmodels import SumModel

from modelhost.access import Role, TokenStore
from modelhost.cli import build_parser, serve_trust
from modelhost.server.extensions import ServerExtensions
from tests.trust.trust_support import (
    MODEL,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    credit_rows,
    logger_headers,
    spd_body,
    v2_request,
    v2_response,
)


def _extensions(store: Path) -> ServerExtensions:
    args = build_parser().parse_args(["serve", "m", "--trust", "--trust-store", str(store)])
    mount = serve_trust.trust_mount(args)
    assert mount is not None
    return ServerExtensions(mounts=(mount,))


def test_without_the_flag_there_is_no_mount() -> None:
    assert serve_trust.trust_mount(build_parser().parse_args(["serve", "m"])) is None


def _log(client: httpx.Client, rows: np.ndarray, approved: np.ndarray) -> None:
    for i, (row, label) in enumerate(zip(rows.tolist(), approved.tolist(), strict=True)):
        event = f"e-{i}"
        sent = client.post(
            "/", content=v2_request([row]), headers=logger_headers(event, REQUEST_TYPE)
        )
        assert sent.status_code == 200, sent.text
        sent = client.post(
            "/", content=v2_response([label]), headers=logger_headers(event, RESPONSE_TYPE)
        )
        assert sent.status_code == 200, sent.text


def test_trust_routes_and_the_data_plane_share_the_port(serve: StartServer, tmp_path: Path) -> None:
    running = serve([SumModel("sum")], extensions=_extensions(tmp_path / "trust.sqlite"))
    with httpx.Client(base_url=running.http_url) as client:
        # The server's own routes are untouched: GET / and inference.
        assert client.get("/").status_code == 200
        infer = client.post(
            "/v2/models/sum/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
            },
        )
        assert infer.json()["outputs"][0]["data"] == [10.0]
        rows, approved = credit_rows(40, seed=3, female_approval=0.2, male_approval=0.8)
        _log(client, rows, approved)
        info = client.get("/info").json()
        assert info[MODEL]["data"]["observations"] == 40
        mapping = {"features-0": "age", "features-1": "gender", "features-2": "income"}
        named = client.post("/info/names", json={"modelId": MODEL, "inputMapping": mapping})
        assert named.status_code == 200, named.text
        spd = client.post("/metrics/group/fairness/spd", json=spd_body())
        assert spd.status_code == 200, spd.text
        gender, outcome = rows[:, 1], approved
        expected = outcome[gender == 0].mean() - outcome[gender == 1].mean()
        assert spd.json()["value"] == pytest.approx(expected, abs=1e-12)
        scheduled = client.post("/metrics/group/fairness/spd/request", json=spd_body())
        assert scheduled.status_code == 200, scheduled.text
        # TrustyAI's own exposition carries the scheduled metric; /metrics stays the server's.
        exposition = client.get("/q/metrics").text
        assert "trustyai_spd{" in exposition
        assert "trustyai_spd" not in client.get("/metrics").text
        # Paths of neither answer 404 (no route of the server's, none of TrustyAI's).
        assert client.get("/nowhere").status_code == 404


def test_tokens_by_role(serve: StartServer, tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "tokens.db")
    running = serve(
        [SumModel("sum")],
        extensions=_extensions(tmp_path / "trust.sqlite"),
        auth="tokens",
        token_file=str(tokens.path),
    )
    _, caller = tokens.create(Role.CALLER)
    _, deployer = tokens.create(Role.DEPLOYER)
    url = running.http_url
    assert httpx.get(f"{url}/info").status_code == 401
    assert (
        httpx.get(f"{url}/info", headers={"Authorization": f"Bearer {caller}"}).status_code == 200
    )
    upload = {"model_name": "m", "data_tag": "TRAINING", "request": {"inputs": []}}
    as_caller = httpx.post(
        f"{url}/data/upload", json=upload, headers={"Authorization": f"Bearer {caller}"}
    )
    assert as_caller.status_code == 403
    as_deployer = httpx.post(
        f"{url}/data/upload", json=upload, headers={"Authorization": f"Bearer {deployer}"}
    )
    # Past the token check: the trust app itself judges the (empty) upload.
    assert as_deployer.status_code not in (401, 403), as_deployer.text


def test_trust_refuses_several_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelhost.cli import main

    code = main(["serve", str(tmp_path), "--trust", "--workers", "2"])
    assert code == 2
    assert "--trust serves from one process" in capsys.readouterr().err
