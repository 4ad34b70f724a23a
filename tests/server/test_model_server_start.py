"""A server answers HTTP before its gRPC side is up (and says it is ready only once both
listen), and a gRPC side that cannot start stops the HTTP one too."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest
from testmodels import EchoModel

from modelhost.server import model_server


def test_http_answers_while_grpc_is_still_being_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    answered = threading.Event()
    grpc_server_class = model_server._grpc_server_class

    def imported_after_an_answer() -> Any:
        assert answered.wait(30), "no HTTP answer came while gRPC was being imported"
        return grpc_server_class()

    monkeypatch.setattr(model_server, "_grpc_server_class", imported_after_an_answer)
    server = model_server.ModelServer(
        settings=model_server.ServerSettings(host="127.0.0.1", http_port=0, grpc_port=0)
    )
    thread = threading.Thread(target=model_server._run, args=(server.serve([EchoModel()]),))
    thread.start()
    try:
        while server.http_port is None:
            assert thread.is_alive()
            threading.Event().wait(0.01)
        answer = httpx.post(
            f"http://127.0.0.1:{server.http_port}/v1/models/echo:predict",
            json={"instances": [1]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        # Not ready (a platform would route gRPC calls to it) until gRPC listens too.
        base = f"http://127.0.0.1:{server.http_port}"
        assert httpx.get(f"{base}/v2/health/ready", timeout=10).status_code == 503
        assert server.grpc_port is None
        assert not server.wait_started(0)
        answered.set()
        assert server.wait_started(30)
        assert server.grpc_port
        assert httpx.get(f"{base}/v2/health/ready", timeout=10).status_code == 200
    finally:
        answered.set()
        server.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_a_grpc_port_in_use_stops_the_http_side_too() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    server = model_server.ModelServer(
        settings=model_server.ServerSettings(host="127.0.0.1", http_port=0, grpc_port=port)
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            model_server._run(server.serve([EchoModel()]))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    taken.close()
    assert not thread.is_alive()
    assert len(failure) == 1, "serve() returned although gRPC could not listen"
    assert isinstance(failure[0], OSError)
    assert str(port) in str(failure[0])
    assert server.http_port is not None
    assert not server.wait_started(0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=5).close()
