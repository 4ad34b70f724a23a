"""``modelhost serve --trust``: TrustyAI's API beside the data plane, on one real HTTP port."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import StartServer
from testmodels import SumModel

from modelhost import InferOutput, InferRequest, InferResponse, Model
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


class CreditModel(Model):
    """A linear score of the logged ``features`` (age, gender, income): SHAP is exact for it."""

    WEIGHTS = np.array([0.01, -0.5, 0.00001])

    def __init__(self) -> None:
        super().__init__(MODEL)
        self.ready = True
        self.rows_asked = 0

    def get_input_types(self) -> list[dict[str, object]]:
        return [{"name": "features", "datatype": "FP64", "shape": [-1, 3]}]

    def predict(self, payload: object, headers: dict[str, str] | None = None) -> InferResponse:
        assert isinstance(payload, InferRequest)
        rows = payload.inputs[0].as_numpy()
        self.rows_asked += len(rows)
        score = InferOutput("approved", [len(rows)], "FP64")
        score.set_data_from_numpy(rows @ self.WEIGHTS)
        return InferResponse(payload.id, self.name, [score])


def test_local_explainers_call_the_served_model(serve: StartServer, tmp_path: Path) -> None:
    # Without a way to call models the trust app answers 501; serve --trust gives it the
    # server's own data plane.
    model = CreditModel()
    running = serve([model], extensions=_extensions(tmp_path / "trust.sqlite"))
    with httpx.Client(base_url=running.http_url, timeout=60) as client:
        rows, approved = credit_rows(40, seed=5)
        _log(client, rows, approved)
        body = {
            "predictionId": "e-7",
            "config": {"model": {"target": "", "name": MODEL, "version": "v1"}, "explainer": {}},
        }
        answer = client.post("/explainers/local/shap", json=body)
        assert answer.status_code == 200, answer.text
        explained = answer.json()
        assert model.rows_asked > 1  # the explainer's made-up rows reached the model
        saliencies = explained["saliencies"]["approved"]
        assert len(saliencies) == 3
        # The SHAP identity: the scores add up to the model's output less the baseline.
        output = float(rows[7] @ CreditModel.WEIGHTS)
        total = sum(s["score"] for s in saliencies)
        assert total == pytest.approx(output - explained["baselines"]["approved"], abs=1e-6)
        lime = client.post("/explainers/local/lime", json=body)
        assert lime.status_code == 200, lime.text
        # A model the server does not have: a 404 naming it, not a 501.
        body["config"]["model"]["name"] = "nobody"  # type: ignore[index]
        missing = client.post("/explainers/local/shap", json=body)
        assert missing.status_code == 404, missing.text


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
