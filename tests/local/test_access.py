"""The platform's doors: the control API apart from the gateway, tokens on both, the audit log."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from platform_fixtures import RunningPlatform, start_platform, stop_platform
from storage_servers import GcsServer
from tritonclient.utils import InferenceServerException

from modelhost import errors
from modelhost.access import Role, TokenStore
from modelhost.local.client import PlatformClient

SAMPLES = Path(__file__).resolve().parents[1] / "control" / "samples"
HOST = "sklearn-iris.default.example.com"
ROW = [6.8, 2.8, 4.8, 1.4]
CUSTOM = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: custom
spec:
  predictor:
    containers:
      - name: kserve-container
        command: ["python3", "-c", "print('code of the user')"]
"""
MODEL_CLASS = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: classy
spec:
  predictor:
    sklearn:
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
      args: ["--model_class", "evil:Model"]
"""
RUNTIME = """
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: my-runtime
spec:
  supportedModelFormats:
    - name: mine
      autoSelect: true
  containers:
    - name: kserve-container
      command: ["python3", "my_server.py"]
"""


@pytest.fixture
def guarded(tmp_path: Path, sample_buckets: GcsServer) -> Iterator[RunningPlatform]:
    """A platform with tokens on its gateway and its control API on loopback TCP too."""
    running = start_platform(
        tmp_path / "home",
        replica_env={
            **sample_buckets.env(),
            "MODELHOST_CACHE_DIR": str(tmp_path / "cache"),
            # Replicas stay open on loopback whatever the environment says: the gateway
            # checked the caller and does not pass the token on.
            "MODELHOST_AUTH": "tokens",
            "MODELHOST_HOST": "0.0.0.0",
        },
        access={"auth": "tokens", "api_port": 0},
    )
    yield running
    stop_platform(running)


def tokens(platform: RunningPlatform) -> TokenStore:
    return TokenStore(platform.home / "tokens.db")


def api(platform: RunningPlatform, token: str | None) -> PlatformClient:
    url = platform.server.api_url
    assert url is not None
    return PlatformClient(url, timeout=30, token=token)


def status_of(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except errors.ModelhostError as exc:
        return exc.status_code
    return 200


def test_the_control_api_is_not_on_the_gateway(guarded: RunningPlatform) -> None:
    address = json.loads((guarded.home / "platform.json").read_text())
    assert address["api"].startswith("unix:")
    assert address["auth"] == "tokens"
    socket_path = Path(address["api"].removeprefix("unix:"))
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(guarded.home.stat().st_mode) == 0o700  # made by the platform
    _, admin = tokens(guarded).create(Role.ADMIN)
    list_path = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
    on_gateway = httpx.get(guarded.url + list_path, headers={"Authorization": f"Bearer {admin}"})
    assert on_gateway.status_code == 404
    apply = httpx.post(
        guarded.url + "/apis/modelhost.io/v1/apply",
        content=CUSTOM,
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert apply.status_code == 404
    assert guarded.client.list_objects("isvc", "default") == []  # the owner's socket


def test_tcp_control_api_roles(guarded: RunningPlatform) -> None:
    store = tokens(guarded)
    _, caller = store.create(Role.CALLER, name="the-caller")
    _, deployer = store.create(Role.DEPLOYER, name="the-deployer")
    _, team = store.create(Role.DEPLOYER, name="team-b", namespace="team-b")
    _, admin = store.create(Role.ADMIN, name="the-admin")
    sample = (SAMPLES / "sklearn-iris-v1.yaml").read_bytes()
    assert status_of(lambda: api(guarded, None).list_objects("isvc", "default")) == 401
    assert status_of(lambda: api(guarded, "mh_0_x").list_objects("isvc", "default")) == 401
    assert status_of(lambda: api(guarded, caller).list_objects("isvc", "default")) == 403
    assert api(guarded, deployer).list_objects("isvc", "default") == []
    assert status_of(lambda: api(guarded, team).apply(sample, "iris.yaml")) == 403
    with pytest.raises(errors.ModelhostError) as denied:
        api(guarded, deployer).apply(CUSTOM.encode(), "custom.yaml")
    assert denied.value.status_code == 403
    assert "spec.predictor.containers" in str(denied.value)
    assert "only an admin token" in str(denied.value)
    with pytest.raises(errors.ModelhostError, match="--model_class") as classy:
        api(guarded, deployer).apply(MODEL_CLASS.encode(), "classy.yaml")
    assert classy.value.status_code == 403
    assert status_of(lambda: api(guarded, deployer).apply(RUNTIME.encode(), "rt.yaml")) == 403
    [applied] = api(guarded, deployer).apply(sample, "iris.yaml")
    assert applied["result"] == "created"
    [runtime] = api(guarded, admin).apply(RUNTIME.encode(), "rt.yaml")
    assert runtime["result"] == "created"
    [custom] = api(guarded, admin).apply(CUSTOM.encode(), "custom.yaml")
    assert custom["result"] == "created"
    api(guarded, admin).delete("isvc", "default", "custom")
    assert (
        status_of(lambda: api(guarded, deployer).delete("isvc", "default", "sklearn-iris")) == 200
    )
    log = [json.loads(line) for line in (guarded.home / "audit.log").read_text().splitlines()]
    by_who = {(e["who"], e["status"]) for e in log}
    assert ("the-caller", 403) in by_who
    assert ("the-admin", 200) in by_who
    assert ("unauthenticated", 401) in by_who
    refused = next(e for e in log if e["who"] == "the-deployer" and e["status"] == 403)
    assert refused["outcome"] == "denied"
    assert "containers" in refused["message"]
    created = next(
        e for e in log if e["who"] == "the-deployer" and e["status"] == 200 and e["objects"]
    )
    assert created["objects"] == ["InferenceService/default/sklearn-iris"]
    assert all(admin not in line for line in (guarded.home / "audit.log").read_text().splitlines())


def test_gateway_tokens_rest_and_grpc(guarded: RunningPlatform) -> None:
    guarded.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    guarded.wait_ready("sklearn-iris")
    store = tokens(guarded)
    _, for_iris = store.create(Role.CALLER, service="sklearn-iris", namespace="default")
    _, for_other = store.create(Role.CALLER, service="other")
    _, gone_namespace = store.create(Role.CALLER, namespace="deleted-team")
    body = {"instances": [ROW]}
    path = "/v1/models/sklearn-iris:predict"
    with httpx.Client(base_url=guarded.url, timeout=30, headers={"Host": HOST}) as client:
        refused = client.post(path, json=body)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="modelhost"'
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 200
        assert client.get("/metrics", headers={"Host": "localhost"}).status_code == 401
        ok = client.post(path, json=body, headers={"Authorization": f"Bearer {for_iris}"})
        assert ok.json() == {"predictions": [1]}
        other = client.post(path, json=body, headers={"Authorization": f"Bearer {for_other}"})
        assert other.status_code == 403
        gone = client.post(path, json=body, headers={"Authorization": f"Bearer {gone_namespace}"})
        assert gone.status_code == 403
        assert "deleted-team" in gone.json()["error"]
        nowhere = client.post(
            "/v1/models/nothing:predict",
            json=body,
            headers={"Host": "x.example.com", "Authorization": f"Bearer {for_other}"},
        )
        assert nowhere.status_code == 403
    tensor = tgrpc.InferInput("input-0", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.asarray([ROW], dtype=np.float64))
    with tgrpc.InferenceServerClient(guarded.grpc_address) as client:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as exc:
            client.infer("sklearn-iris", [tensor])
        assert "UNAUTHENTICATED" in str(exc.value.status())
        with pytest.raises(InferenceServerException) as exc:
            client.infer("sklearn-iris", [tensor], headers={"authorization": f"Bearer {for_other}"})
        assert "PERMISSION_DENIED" in str(exc.value.status())
        result = client.infer(
            "sklearn-iris", [tensor], headers={"authorization": f"Bearer {for_iris}"}
        )
        assert result.as_numpy("output-0").tolist() == [1]


def test_token_commands_and_a_token_for_the_cli(
    guarded: RunningPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelhost.cli import main

    home = ["--home", str(guarded.home)]
    assert (
        main(["token", "create", "--role", "deployer", "--name", "ci", "--expires", "1d", *home])
        == 0
    )
    text = capsys.readouterr().out.strip()
    assert text.startswith("mh_")
    assert main(["token", "list", *home]) == 0
    listing = capsys.readouterr().out
    assert "ci" in listing
    assert "deployer" in listing
    assert text not in listing
    server = ["--server", str(guarded.server.api_url)]
    assert main(["get", "isvc", *server]) == 1  # no token
    assert "needs a token" in capsys.readouterr().err
    assert main(["get", "isvc", *server, "--token", text]) == 0
    assert "No resources found" in capsys.readouterr().out
    assert main(["token", "revoke", "ci", *home]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--all", *home]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", "nobody", *home]) == 1
    log = (guarded.home / "audit.log").read_text()
    assert '"action":"token create"' in log
    assert '"action":"token revoke"' in log


def test_the_gateway_checks_tokens_when_it_listens_beyond_loopback(tmp_path: Path) -> None:
    from modelhost.cli import build_parser
    from modelhost.cli.platform_commands import _settings

    def settings(*argv: str) -> object:
        return _settings(build_parser().parse_args(["up", *argv]), tmp_path)

    assert settings().gateway_auth is False  # type: ignore[attr-defined]
    assert settings("--host", "0.0.0.0").gateway_auth is True  # type: ignore[attr-defined]
    assert settings("--host", "::").gateway_auth is True  # type: ignore[attr-defined]
    assert settings("--host", "0.0.0.0", "--auth", "none").gateway_auth is False  # type: ignore[attr-defined]
    assert settings("--auth", "tokens").gateway_auth is True  # type: ignore[attr-defined]


def _raw(address: str | tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` on a new connection; what came back before the server closed or 2 s."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(address)
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def test_the_control_api_survives_hostile_input(guarded: RunningPlatform) -> None:
    """Seeded fuzz of both listeners: garbage, broken HTTP, huge headers and bodies."""
    unix_path = guarded.server.api_address.removeprefix("unix:")
    url = guarded.server.api_url
    assert url is not None
    host, port = url.removeprefix("http://").split(":")
    _, admin = tokens(guarded).create(Role.ADMIN)
    good = "GET /apis/serving.kserve.io/v1beta1/inferenceservices HTTP/1.1\r\nHost: x\r\n"
    cases = [
        b"",
        b"\x00" * 100,
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /apis HTTP/9.9\r\n\r\n",
        b"POST /apis/modelhost.io/v1/apply HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /apis/modelhost.io/v1/apply HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /apis HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n",
        (good + f"Authorization: Bearer {'x' * 70_000}\r\n\r\n").encode(),
        (good + "Authorization: \xff\xfe\r\n\r\n").encode("latin-1"),
    ]
    rng = random.Random(13)
    for _ in range(40):
        data = bytearray((good + f"Authorization: Bearer {admin}\r\n\r\n").encode())
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    big = b"a: " + b"x" * (9 * 1024 * 1024)
    cases.append(
        b"POST /apis/modelhost.io/v1/apply HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(big)).encode()
        + f"\r\nAuthorization: Bearer {admin}\r\n\r\n".encode()
        + big
    )
    for data in cases:
        for address in (unix_path, (host, int(port))):
            answer = _raw(address, data)
            assert not answer.startswith(b"HTTP/1.1 5"), (data[:80], answer[:200])
    too_big = _raw((host, int(port)), cases[-1])
    assert too_big.startswith(b"HTTP/1.1 413")
    # Still serving, both doors.
    assert guarded.client.list_objects("isvc", "default") == []
    assert api(guarded, admin).list_objects("isvc", "default") == []


async def test_the_control_api_never_listens_beyond_loopback(tmp_path: Path) -> None:
    from modelhost.local.server import PlatformServer
    from modelhost.local.settings import PlatformSettings

    settings = PlatformSettings(home=tmp_path, api_port=0, api_host="0.0.0.0")
    with pytest.raises(errors.InvalidInput, match="loopback only"):
        await PlatformServer(settings).start()  # refused before anything listens


def test_trustyai_routes_need_a_token_by_role(guarded: RunningPlatform) -> None:
    store = tokens(guarded)
    _, caller = store.create(Role.CALLER)
    _, deployer = store.create(Role.DEPLOYER)
    spd = {
        "modelId": "nothing-logged",
        "protectedAttribute": "a",
        "privilegedAttribute": 1,
        "unprivilegedAttribute": 0,
        "outcomeName": "y",
        "favorableOutcome": 1,
    }
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        assert client.get("/info").status_code == 401
        reads = client.get("/info", headers={"Authorization": f"Bearer {caller}"})
        assert (reads.status_code, reads.json()) == (200, {})
        path = "/metrics/group/fairness/spd/request"
        as_caller = client.post(path, json=spd, headers={"Authorization": f"Bearer {caller}"})
        assert as_caller.status_code == 403
        as_deployer = client.post(path, json=spd, headers={"Authorization": f"Bearer {deployer}"})
        # Past the token check: refused by the trust service for the model it does not know.
        assert as_deployer.status_code == 404
        assert "nothing-logged" in as_deployer.json()["error"]
