"""A server process keeps freed request buffers in malloc's heap: no page faults per request."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from modelhost.server.heap import keep_freed_buffers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# What a 600 KB tensor's request does to the heap: three socket reads, the body joined, a
# copy decoded; then it is all freed. Prints the page faults one such request costs.
_REQUEST_SHAPED = """
import os, resource, sys
{setup}
def once():
    reads = [os.urandom(1) * (256 << 10) for _ in range(3)]
    whole = b"".join(reads)
    del reads
    decoded = bytearray(whole)
    del whole, decoded
for _ in range(5):
    once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    once()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def _faults_per_request(setup: str) -> float:
    script = _REQUEST_SHAPED.format(setup=textwrap.dedent(setup))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return float(done.stdout.split()[-1])


def _is_glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _is_glibc(), reason="the thresholds are glibc's")
def test_fixed_thresholds_leave_no_page_fault_per_request() -> None:
    setup = """
        from modelhost.server.heap import keep_freed_buffers
        assert keep_freed_buffers(4 << 20)
    """
    # glibc's own thresholds fault ~350 pages a request here (the trimmed top comes back).
    assert _faults_per_request(setup) < 1


@pytest.mark.skipif(not _is_glibc(), reason="the thresholds are glibc's")
def test_a_model_server_sets_them_when_it_serves() -> None:
    setup = """
        import asyncio, threading
        from modelhost import ModelServer
        from modelhost.settings import ServerSettings
        settings = ServerSettings(host="127.0.0.1", http_port=0, grpc_port=0, enable_grpc=False)
        server = ModelServer(settings=settings)
        threading.Thread(target=lambda: asyncio.run(server.serve([])), daemon=True).start()
        assert server.wait_started(60)
    """
    assert _faults_per_request(setup) < 1


def test_zero_leaves_glibc_in_charge() -> None:
    assert keep_freed_buffers(0) is False
