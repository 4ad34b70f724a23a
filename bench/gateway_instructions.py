"""Instructions the platform's process (the gateway) spends per request, under callgrind.

The embedded platform runs under valgrind's callgrind (its replicas, started by exec, run
natively) with two iris InferenceServices, the Sequence graph of ``graph_scenario.py`` and a
one-step graph; a client on one keep-alive connection makes each load ``K`` times while
callgrind counts, zeroed before and read after (``callgrind_control``):

- ``direct``: one call to ``iris-a`` relayed by the gateway;
- ``pair``: ``iris-a`` then ``iris-b``, the client chaining the two (counted per pair);
- ``graph``: one request to the two-step graph; ``graph1``: to the one-step graph.

Unlike a rate on this host, the count moves by about 1% run to run, so a change to the
gateway's path of a few percent shows. ``graph`` - ``pair`` is the graph's own work.

    .venv/bin/python bench/gateway_instructions.py      # K=1000 ROUNDS=2; ~2 minutes

Needs valgrind (Debian's). Prints the counts; nothing is written.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import graph_scenario as scenario

K = int(os.environ.get("K", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
ONE_STEP_HOST = "iris-one.default.example.com"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="gateway-instructions-"))
    model = scenario.iris_model(work / "iris")
    # The Sequence with its first step alone.
    second_step = "        - {serviceName: iris-b"
    one_step = scenario.GRAPH.replace("iris-chain", "iris-one").split(second_step)[0]
    objects = work / "objects.yaml"
    services = [scenario.iris_service("iris-a", model), scenario.iris_service("iris-b", model)]
    objects.write_text("---".join([*services, scenario.GRAPH, one_step]))
    home = work / "home"
    port, grpc_port = scenario.free_port(), scenario.free_port()
    platform = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *scenario.MODELHOST,
         "up", "--home", str(home), "--port", str(port), "--grpc-port", str(grpc_port)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        scenario.wait_http(f"http://127.0.0.1:{port}/healthz", platform, timeout=600)
        subprocess.run(
            [*scenario.MODELHOST, "apply", "-f", str(objects), "--server",
             f"unix:{home / 'api.sock'}", "--wait", "--timeout", "600"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        measure(platform.pid, port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(platform.pid, signal.SIGTERM)
        platform.wait(60)
    return 0


def measure(pid: int, port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(path: str, host: str) -> None:
        headers = {"content-type": "application/json", **({"host": host} if host else {})}
        connection.request("POST", path, body=scenario.BODY, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{path} at {host or '-'} answered {answer.status}: {body!r}")

    loads = {
        "direct": [("/v1/models/iris-a:predict", "")],
        "pair": [("/v1/models/iris-a:predict", ""), ("/v1/models/iris-b:predict", "")],
        "graph": [("/", scenario.GRAPH_HOST)],
        "graph1": [("/", ONE_STEP_HOST)],
    }
    for calls in loads.values():  # warm: connections open, code paths taken
        for _ in range(100):
            for path, host in calls:
                call(path, host)
    for _ in range(ROUNDS):
        for name, calls in loads.items():
            subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
            started = time.monotonic()
            for _ in range(K):
                for path, host in calls:
                    call(path, host)
            count = _instructions(pid)
            per = "pair (2 calls)" if name == "pair" else "request"
            print(
                f"{name:6} {count / K / 1000:8.1f}k instructions per {per} "
                f"({time.monotonic() - started:.1f}s)",
                flush=True,
            )


def _instructions(pid: int) -> int:
    out = subprocess.run(
        ["callgrind_control", "-e", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"Th 1\s+([\d,]+)", out)
    if found is None:
        raise RuntimeError(f"callgrind_control gave no count: {out!r}")
    return int(found.group(1).replace(",", ""))


if __name__ == "__main__":
    sys.exit(main())
