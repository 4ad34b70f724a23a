"""TLS on the platform's gateway (REST and gRPC), replicas behind it on clear loopback."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from platform_fixtures import RunningPlatform, start_platform, stop_platform
from storage_servers import GcsServer
from tls_certificates import Certificates, make_certificates

from modelhost.access.tls import CertificateReloader
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc

SAMPLES = Path(__file__).resolve().parents[1] / "control" / "samples"
HOST = "sklearn-iris.default.example.com"


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


@pytest.fixture
def tls_platform(
    tmp_path: Path,
    sample_buckets: GcsServer,
    certs: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningPlatform]:
    monkeypatch.setattr(CertificateReloader, "interval", 0.05)
    cert, key = certs.server1.write(tmp_path, "gateway")
    running = start_platform(
        tmp_path / "home",
        replica_env={**sample_buckets.env(), "MODELHOST_CACHE_DIR": str(tmp_path / "cache")},
        access={"ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_ca_certs": str(certs.ca)},
    )
    yield running
    stop_platform(running)


def served_cn(port: int, certs: Certificates) -> str:
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(*certs.client_files())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        peer = tls.getpeercert()
    assert peer is not None
    return str(dict(field[0] for field in peer["subject"])["commonName"])


def test_the_gateway_over_mutual_tls_with_reload(
    tls_platform: RunningPlatform, certs: Certificates, tmp_path: Path
) -> None:
    assert tls_platform.url.startswith("https://")
    tls_platform.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    tls_platform.wait_ready("sklearn-iris")
    with_cert = ssl.create_default_context(cafile=str(certs.ca))
    with_cert.load_cert_chain(*certs.client_files())
    body = {"instances": [[6.8, 2.8, 4.8, 1.4]]}
    with httpx.Client(base_url=tls_platform.url, verify=with_cert, timeout=30) as client:
        answer = client.post("/v1/models/sklearn-iris:predict", json=body, headers={"Host": HOST})
        assert answer.json() == {"predictions": [1]}
    with (
        httpx.Client(verify=ssl.create_default_context(cafile=str(certs.ca))) as anonymous,
        pytest.raises(httpx.TransportError),
    ):
        anonymous.get(tls_platform.url + "/healthz")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client.key,
        certificate_chain=certs.client.cert,
    )
    address = f"localhost:{tls_platform.server.grpc_port}"
    with grpc.secure_channel(address, credentials) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    # A renewed certificate under the running gateway: the next connection shows it.
    certs.server2.write(tmp_path, "gateway")
    for port in (tls_platform.server.http_port, tls_platform.server.grpc_port):
        deadline = time.monotonic() + 5
        while served_cn(port, certs) != "server-2":
            assert time.monotonic() < deadline, f"port {port} still shows the old certificate"
            time.sleep(0.02)
