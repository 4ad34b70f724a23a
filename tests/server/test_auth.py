"""``modelhost serve --auth tokens``: REST and gRPC over real sockets, with real clients."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from serving import RunningServer, StartServer
from testmodels import SumModel
from tritonclient.utils import InferenceServerException

from modelhost import Model
from modelhost.access import Role, TokenStore

ROW = [[1.0, 2.0, 3.0, 4.0]]


class HeaderModel(Model):
    """Answers with the names of the headers it was given."""

    def __init__(self, name: str = "headers") -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"predictions": sorted(headers or {})}


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.db")


@pytest.fixture(params=[True, False], ids=["native-grpc", "grpc-aio"])
def server(request: pytest.FixtureRequest, serve: StartServer, tokens: TokenStore) -> RunningServer:
    return serve(
        [SumModel("a"), SumModel("b"), HeaderModel()],
        auth="tokens",
        token_file=str(tokens.path),
        native_grpc=request.param,
    )


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


def v2(row: list[list[float]] = ROW) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row[0]}]}


def test_rest_needs_a_token_and_probes_stay_open(server: RunningServer, tokens: TokenStore) -> None:
    url = server.http_url
    refused = httpx.post(f"{url}/v2/models/a/infer", json=v2())
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="modelhost"'
    assert "Authorization: Bearer" in refused.json()["error"]
    for probe in ("/", "/v2/health/live", "/v2/health/ready", "/v2/models/a/ready", "/v1/models/a"):
        assert httpx.get(url + probe).status_code == 200, probe
    assert httpx.get(f"{url}/v2/models/a").status_code == 401  # metadata is not a probe
    assert httpx.get(f"{url}/v2/models").status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    _, text = tokens.create(Role.CALLER, name="for-a", service="a")
    answer = httpx.post(f"{url}/v2/models/a/infer", json=v2(), headers=bearer(text))
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == [10.0]
    other = httpx.post(f"{url}/v2/models/b/infer", json=v2(), headers=bearer(text))
    assert other.status_code == 403
    assert other.json()["error"] == "Token 'for-a' is for service 'a', not service 'b'."
    v1 = httpx.post(f"{url}/v1/models/b:predict", json={"instances": ROW}, headers=bearer(text))
    assert v1.status_code == 403


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer mh_0123456789ab_" + "A" * 43,
        "Bearer " + "x" * 8000,
        "bearer  not-a-token",
    ],
)
def test_malformed_authorization_is_401(server: RunningServer, header: str) -> None:
    answer = httpx.post(
        f"{server.http_url}/v2/models/a/infer", json=v2(), headers={"Authorization": header}
    )
    assert answer.status_code == 401
    assert "x" * 100 not in answer.text


def test_the_model_never_sees_the_token(server: RunningServer, tokens: TokenStore) -> None:
    _, text = tokens.create(Role.CALLER)
    answer = httpx.post(
        f"{server.http_url}/v1/models/headers:predict",
        json={"instances": [1]},
        headers={**bearer(text), "x-trace": "1"},
    )
    assert answer.status_code == 200
    names = answer.json()["predictions"]
    assert "x-trace" in names
    assert "authorization" not in names


def test_deployer_for_repository_changes(server: RunningServer, tokens: TokenStore) -> None:
    _, caller = tokens.create(Role.CALLER)
    _, deployer = tokens.create(Role.DEPLOYER)
    path = f"{server.http_url}/v2/repository/models/a/unload"
    assert httpx.post(path, headers=bearer(caller)).status_code == 403
    assert httpx.post(path, headers=bearer(deployer)).status_code == 200


def _grpc_code(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status()).split(".")[-1]


def test_grpc_needs_a_token(server: RunningServer, tokens: TokenStore) -> None:
    _, text = tokens.create(Role.CALLER, service="a")
    with tgrpc.InferenceServerClient(server.grpc_address) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("a")
        tensor = tgrpc.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.asarray(ROW, dtype=np.float32))
        with pytest.raises(InferenceServerException) as exc:
            client.infer("a", [tensor])
        assert _grpc_code(exc) == "UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_metadata("a")
        assert _grpc_code(exc) == "UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as exc:
            client.infer("a", [tensor], headers={"authorization": "Bearer mh_bad"})
        assert _grpc_code(exc) == "UNAUTHENTICATED"
        result = client.infer("a", [tensor], headers={"authorization": f"Bearer {text}"})
        assert result.as_numpy("sum").tolist() == [10.0]
        metadata = client.get_model_metadata("a", headers={"authorization": f"Bearer {text}"})
        assert metadata.name == "a"
        with pytest.raises(InferenceServerException) as exc:
            client.infer("b", [tensor], headers={"authorization": f"Bearer {text}"})
        assert _grpc_code(exc) == "PERMISSION_DENIED"
        assert "for service 'a'" in exc.value.message()


def test_tritonclient_http_with_a_header(server: RunningServer, tokens: TokenStore) -> None:
    _, text = tokens.create(Role.CALLER)
    client = thttp.InferenceServerClient(server.http_address)
    try:
        tensor = thttp.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.asarray(ROW, dtype=np.float32), binary_data=True)
        result = client.infer("a", [tensor], headers=bearer(text))
        assert result.as_numpy("sum").tolist() == [10.0]
        with pytest.raises(InferenceServerException, match="needs a token"):
            client.infer("a", [tensor])
    finally:
        client.close()


def test_a_revoked_token_stops_within_a_second(server: RunningServer, tokens: TokenStore) -> None:
    token, text = tokens.create(Role.CALLER)
    url = f"{server.http_url}/v2/models/a/infer"
    assert httpx.post(url, json=v2(), headers=bearer(text)).status_code == 200
    tokens.revoke(token.name)
    revoked = time.monotonic()
    while httpx.post(url, json=v2(), headers=bearer(text)).status_code == 200:
        assert time.monotonic() - revoked < 1.0, "a revoked token still works after 1 s"
    assert httpx.post(url, json=v2(), headers=bearer(text)).status_code == 401


def test_rate_limit_answers_429_with_retry_after(server: RunningServer, tokens: TokenStore) -> None:
    _, text = tokens.create(Role.CALLER, rate=0.5, burst=2)
    url = f"{server.http_url}/v2/models/a/infer"
    statuses = [httpx.post(url, json=v2(), headers=bearer(text)) for _ in range(3)]
    assert [s.status_code for s in statuses] == [200, 200, 429]
    assert statuses[2].headers["retry-after"] == "2"
    assert "rate of 0.5 requests/s" in statuses[2].json()["error"]
    tensor = tgrpc.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(ROW, dtype=np.float32))
    with (
        tgrpc.InferenceServerClient(server.grpc_address) as client,
        pytest.raises(InferenceServerException) as exc,
    ):
        client.infer("a", [tensor], headers={"authorization": f"Bearer {text}"})
    assert _grpc_code(exc) == "RESOURCE_EXHAUSTED"
