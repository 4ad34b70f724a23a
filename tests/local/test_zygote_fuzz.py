"""Fuzz of the zygote's socket: any bytes a client sends get an error line, never a fork.

A real zygote process (with nothing heavy preloaded) takes arbitrary requests, with and
without a log descriptor, with lengths that lie; it answers each with ``error ...`` (or
closes), forks nothing, and still forks a valid request afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelhost.local.zygote_process import HEADER

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote forks")


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("zygote-fuzz")
    path = folder / "z.sock"
    log = folder / "zygote.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhost.local.zygote_process", "--socket", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the zygote did not listen"
        time.sleep(0.02)
    yield path, folder
    process.terminate()
    assert process.wait(10) == 0


def _send(path: Path, data: bytes, with_fd: bool, folder: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        # The zygote may refuse (answer and close) before the rest is sent: a refusal is
        # what the test waits for, so a send that finds the connection closed is not a failure.
        with (
            open(folder / "child.log", "ab") as log,
            contextlib.suppress(BrokenPipeError, ConnectionResetError),
        ):
            fds = [log.fileno()] if with_fd else []
            head, rest = data[: HEADER.size], data[HEADER.size :]
            socket.send_fds(sock, [head or b"\0"], fds)
            if rest:
                sock.sendall(rest)
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := _recv(sock):
            answer += chunk
            if answer.endswith(b"\n") and not answer.startswith(b"pid"):
                break
        return answer


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    lie=st.integers(min_value=-3, max_value=3),
    with_fd=st.booleans(),
)
def test_bad_requests_get_an_error_and_no_fork(
    zygote: tuple[Path, Path], body: bytes, lie: int, with_fd: bool
) -> None:
    path, folder = zygote
    size = max(0, len(body) + lie)
    answer = _send(path, HEADER.pack(size) + body, with_fd, folder)
    assert not answer.startswith(b"pid"), answer
    assert answer == b"" or answer.startswith(b"error "), answer


def test_a_valid_request_still_forks_after_the_fuzz(zygote: tuple[Path, Path]) -> None:
    path, folder = zygote
    document = json.dumps(
        {"argv": ["--help"], "env": dict(os.environ), "cwd": str(folder)}
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        with open(folder / "child.log", "ab") as log:
            socket.send_fds(sock, [HEADER.pack(len(document))], [log.fileno()])
        sock.sendall(document)
        lines = b""
        while lines.count(b"\n") < 2:
            chunk = sock.recv(4096)
            assert chunk, lines
            lines += chunk
    first, second = lines.decode().splitlines()[:2]
    assert first.startswith("pid ")
    assert second == "exit 0"


def _recv(sock: socket.socket) -> bytes:
    """The next bytes; b"" once the zygote has closed (a reset after its refusal too)."""
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""
