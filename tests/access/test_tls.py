"""TLS on a real ModelServer: https, gRPC over TLS (both fronts), reload, mutual TLS.

Certificates are made here (a CA, two server certificates, a client certificate); every
check opens real connections to 127.0.0.1 on ports the kernel picks.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from serving import RunningServer, StartServer
from testmodels import SumModel
from tls_certificates import Certificates, make_certificates

from modelhost import errors
from modelhost.access.tls import CertificateReloader, reloader_for
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CertificateReloader, "interval", 0.05)


def _serve_tls(
    serve: StartServer, certs: Certificates, folder: Path, *, mutual: bool = False, **options: Any
) -> tuple[RunningServer, Path, Path]:
    cert, key = certs.server1.write(folder, "server")
    ca = str(certs.ca) if mutual else ""
    running = serve(
        [SumModel("sum")], ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_ca_certs=ca, **options
    )
    return running, cert, key


# -- clients -------------------------------------------------------------------------------


def _client_context(certs: Certificates, alpn: str = "http/1.1", *, cert: bool = False) -> Any:
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.set_alpn_protocols([alpn])
    if cert:
        context.load_cert_chain(*certs.client_files())
    return context


def _served_cn(port: int, certs: Certificates, alpn: str = "http/1.1") -> str:
    """The common name of the certificate a new connection to ``port`` is shown."""
    context = _client_context(certs, alpn, cert=True)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        peer = tls.getpeercert()
    assert peer is not None
    subject = dict(field[0] for field in peer["subject"])
    return str(subject["commonName"])


def _eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def _infer_request() -> Any:
    rows = np.array([[6.5, 2.5, 4.5, 1.5], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    request = pb.ModelInferRequest(model_name="sum", id="tls")
    request.inputs.add(name="x", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


def _grpc_infer(port: int, certs: Certificates, *, cert: bool = False) -> np.ndarray[Any, Any]:
    client_key = certs.client.key if cert else None
    client_chain = certs.client.cert if cert else None
    credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes(), client_key, client_chain)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live  # relayed to grpc.aio
        response = stub.ModelInfer(_infer_request(), timeout=10)
    assert response.outputs[0].name == "sum"
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32)


# -- the reloader on its own ------------------------------------------------------------------


def test_no_tls_settings_make_no_reloader() -> None:
    assert reloader_for("", "", "") is None


@pytest.mark.parametrize(
    ("keyfile", "ca_certs", "flag"),
    [("server.key", "", "--ssl_keyfile"), ("", "ca.crt", "--ssl_ca_certs")],
)
def test_a_key_or_ca_without_certificate_is_refused(keyfile: str, ca_certs: str, flag: str) -> None:
    with pytest.raises(errors.InvalidInput, match=f"{flag} needs --ssl_certfile"):
        reloader_for("", keyfile, ca_certs)


def test_a_missing_file_is_refused_by_name(certs: Certificates, tmp_path: Path) -> None:
    cert, _ = certs.server1.write(tmp_path, "server")
    missing = tmp_path / "nowhere.key"
    with pytest.raises(errors.InvalidInput, match=f"--ssl_keyfile {missing}: no such file"):
        reloader_for(str(cert), str(missing))
    with pytest.raises(errors.InvalidInput, match=str(tmp_path / "nowhere.crt")):
        CertificateReloader(tmp_path / "nowhere.crt")


def test_a_key_of_another_certificate_is_refused(certs: Certificates, tmp_path: Path) -> None:
    cert, _ = certs.server1.write(tmp_path, "one")
    _, other_key = certs.server2.write(tmp_path, "two")
    with pytest.raises(errors.InvalidInput, match=f"cannot use the certificate {cert}"):
        CertificateReloader(cert, other_key)


def test_an_encrypted_key_is_refused_without_a_prompt(certs: Certificates, tmp_path: Path) -> None:
    cert, key = certs.server1.write(tmp_path, "server")
    plain = serialization.load_pem_private_key(certs.server1.key, None)
    key.write_bytes(
        plain.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(errors.InvalidInput, match="the key is encrypted"):
        CertificateReloader(cert, key)


def test_a_certificate_file_holding_its_key_is_enough(certs: Certificates, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(certs.server1.cert + certs.server1.key)
    reloader = CertificateReloader(both)
    assert reloader.context(["h2"]).verify_mode == ssl.CERT_NONE
    assert reloader.grpc_credentials() is not None


def test_check_loads_changed_files_and_keeps_the_old_on_bad_ones(
    certs: Certificates, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelhost.access")
    cert, key = certs.server1.write(tmp_path, "server")
    reloader = CertificateReloader(cert, key, certs.ca)
    context = reloader.context(["http/1.1"])
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert not reloader.check()  # nothing changed
    cert.write_bytes(certs.server2.cert[: len(certs.server2.cert) // 2])
    assert not reloader.check()
    assert not reloader.check()  # the same bad files: logged once
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(cert) in warnings[0].getMessage()
    cert.unlink()
    assert not reloader.check()
    assert "no such file" in caplog.records[-1].getMessage()
    certs.server2.write(tmp_path, "server")
    assert reloader.check()
    assert reloader.reloads == 1


# -- a ModelServer over TLS --------------------------------------------------------------------


def test_rest_over_https(serve: StartServer, certs: Certificates, tmp_path: Path) -> None:
    running, _, _ = _serve_tls(serve, certs, tmp_path)
    url = f"https://127.0.0.1:{running.server.http_port}"
    with httpx.Client(verify=_client_context(certs)) as client:
        assert client.get(f"{url}/v2/models/sum/ready").status_code == 200
        body = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
        }
        answer = client.post(f"{url}/v2/models/sum/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [10.0]
    with pytest.raises(httpx.TransportError), httpx.Client() as plain:
        plain.get(f"http://127.0.0.1:{running.server.http_port}/v2/health/live")


@pytest.mark.parametrize("native_grpc", [True, False], ids=["native", "grpc-aio"])
def test_grpc_over_tls(
    serve: StartServer, certs: Certificates, tmp_path: Path, native_grpc: bool
) -> None:
    running, _, _ = _serve_tls(serve, certs, tmp_path, native_grpc=native_grpc)
    assert _grpc_infer(running.server.grpc_port or 0, certs).tolist() == [15.0, 10.0]
    # A clear-text client gets no answer from a TLS port.
    with grpc.insecure_channel(running.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
    assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


@pytest.mark.parametrize("native_grpc", [True, False], ids=["native", "grpc-aio"])
@pytest.mark.usefixtures("fast_watch")
def test_a_renewed_certificate_is_served_without_restart(
    serve: StartServer,
    certs: Certificates,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    native_grpc: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="modelhost.access")
    running, cert, key = _serve_tls(serve, certs, tmp_path, native_grpc=native_grpc)
    http_port, grpc_port = running.server.http_port or 0, running.server.grpc_port or 0
    assert _served_cn(http_port, certs) == "server-1"
    assert _served_cn(grpc_port, certs, "h2") == "server-1"
    with (
        httpx.Client(verify=_client_context(certs)) as kept,
        grpc.secure_channel(
            f"127.0.0.1:{grpc_port}", grpc.ssl_channel_credentials(certs.ca.read_bytes())
        ) as channel,
    ):
        kept_url = f"https://127.0.0.1:{http_port}/v2/health/ready"
        assert kept.get(kept_url).status_code == 200
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready

        # Half written: the watcher logs it, and keeps the certificate in use.
        cert.write_bytes(certs.server2.cert[: len(certs.server2.cert) // 2])
        _eventually(
            lambda: any(r.getMessage().startswith("TLS: ") for r in caplog.records),
            "the watcher reports the half-written certificate",
        )
        assert _served_cn(http_port, certs) == "server-1"
        assert _served_cn(grpc_port, certs, "h2") == "server-1"

        # Written through: new connections get it, on both ports.
        key.write_bytes(certs.server2.key)
        cert.write_bytes(certs.server2.cert)
        _eventually(lambda: _served_cn(http_port, certs) == "server-2", "https serves server-2")
        _eventually(
            lambda: _served_cn(grpc_port, certs, "h2") == "server-2", "gRPC serves server-2"
        )
        assert _grpc_infer(grpc_port, certs).tolist() == [15.0, 10.0]
        # Connections opened before go on, with the certificate they started with.
        assert kept.get(kept_url).status_code == 200
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


@pytest.mark.parametrize("native_grpc", [True, False], ids=["native", "grpc-aio"])
def test_mutual_tls_refuses_clients_without_a_certificate(
    serve: StartServer, certs: Certificates, tmp_path: Path, native_grpc: bool
) -> None:
    running, _, _ = _serve_tls(serve, certs, tmp_path, mutual=True, native_grpc=native_grpc)
    url = f"https://127.0.0.1:{running.server.http_port}/v2/models/sum/ready"
    with pytest.raises(httpx.TransportError), httpx.Client(verify=_client_context(certs)) as anon:
        anon.get(url)
    with httpx.Client(verify=_client_context(certs, cert=True)) as client:
        assert client.get(url).status_code == 200

    grpc_port = running.server.grpc_port or 0
    with pytest.raises(grpc.RpcError) as failure:
        _grpc_infer(grpc_port, certs)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _grpc_infer(grpc_port, certs, cert=True).tolist() == [15.0, 10.0]


def test_tritonclient_http_over_https(
    serve: StartServer, certs: Certificates, tmp_path: Path
) -> None:
    triton = pytest.importorskip("tritonclient.http")
    gevent_ssl = pytest.importorskip("gevent.ssl")
    running, _, _ = _serve_tls(serve, certs, tmp_path)
    client = triton.InferenceServerClient(
        f"localhost:{running.server.http_port}",
        ssl=True,
        ssl_context_factory=lambda: gevent_ssl.create_default_context(cafile=str(certs.ca)),
        # The context checks the name it is given here; "insecure" only turns off
        # geventhttpclient's second check, through the deprecated ssl.match_hostname.
        ssl_options={"server_hostname": "localhost"},
        insecure=True,
    )
    try:
        assert client.is_model_ready("sum")
        rows = np.array([[1, 2, 3, 4]], dtype=np.float32)
        infer_input = triton.InferInput("x", list(rows.shape), "FP32")
        infer_input.set_data_from_numpy(rows)
        result = client.infer("sum", [infer_input])
        assert result.as_numpy("sum").tolist() == [10.0]
    finally:
        client.close()
