"""What an InferenceGraph costs: a two-step Sequence against the same two calls by the client.

The embedded platform (``modelhost up``, pinned with its replicas to core 0) serves two iris
InferenceServices and a Sequence graph of both (the second step gets the graph's request,
``data: $request``, as KServe's sample does); wrk, pinned to core 1, makes three loads through
the gateway, at each connection count:

- ``direct``: one call to ``iris-a`` per request: the cost of one direct call;
- ``pair``: the calls to ``iris-a`` and ``iris-b`` one after another on each connection,
  as a client chaining the two models itself;
- ``graph``: one call to the graph, which makes the same two calls.

The graph's added cost per request is (1 / graph req/s) - (2 / pair calls/s), and the target
is that it stays within 20% of one direct call (1 / direct req/s). Results go to
``OUT/graph.csv`` and ``OUT/graph.md`` (default ``bench/results/<UTC time>-graph``).

    .venv/bin/python bench/graph_scenario.py    # DUR=10 WARM=3 CONNS="1 8" PASSES=1 ROUNDS=3

At each connection count the three loads run ``ROUNDS`` times in turn (direct, pair, graph,
direct, ...), and the added cost is taken per round, from three loads run within half a
minute of each other: on a shared, noisy host a load's rate drifts by 10-30% over minutes,
which a difference of two rates amplifies. The verdict is the median over every round of
every pass.

Both places a router can run are measured, each on a platform of its own: ``in-process`` (the
router in the gateway's process, the default) and ``replica`` (a ``modelhost graph`` process
behind the gateway). ``MODES="in-process"`` measures one.

Needs wrk and taskset; uses this checkout's modelhost (``python -m modelhost``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
DUR = int(os.environ.get("DUR", "10"))
WARM = int(os.environ.get("WARM", "3"))
PASSES = int(os.environ.get("PASSES", "1"))
# The three loads again and again on one platform: the host's drift moves all three alike.
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONNS = [int(c) for c in os.environ.get("CONNS", "1 8").split()]
SERVER_CPU, LOAD_CPU = os.environ.get("SERVER_CPU", "0"), os.environ.get("LOAD_CPU", "1")
MODELHOST = [sys.executable, "-m", "modelhost"]
BODY = b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}'
GRAPH_HOST = "iris-chain.default.example.com"
TARGET = 0.20
MODES = os.environ.get("MODES", "in-process replica").split()

GRAPH = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: iris-chain}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - {serviceName: iris-a, name: iris-a}
        - {serviceName: iris-b, name: iris-b, data: $request}
"""

LOADS = {
    "direct": ("/v1/models/iris-a:predict", ""),
    "pair": ("/v1/models/iris-a:predict /v1/models/iris-b:predict", ""),
    "graph": ("/", GRAPH_HOST),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def iris_model(folder: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), folder / "model.joblib")
    return folder


def prime_fast_start(model: Path, folder: Path, python: str = sys.executable) -> None:
    """Leave the sklearn model's distilled form in ``folder``, as the first start of a model
    file does (``python``: the interpreter whose modelhost makes it)."""
    code = (
        "import sys\nfrom modelhost.runtimes.sklearn import SKLearnModel\n"
        "SKLearnModel('m', sys.argv[1], fast_start_dir=sys.argv[2]).load()"
    )
    subprocess.run([python, "-c", code, str(model), str(folder)], check=True)
    if not list(folder.glob("*.npz")):
        raise SystemExit(f"{model} left no distilled form in {folder}")


def iris_service(name: str, model: Path, *predictor_lines: str) -> str:
    """An InferenceService ``name`` serving the sklearn model in ``model``, with
    ``predictor_lines`` (YAML, e.g. a logger) added to its predictor."""
    extra = "".join(f"    {line}\n" for line in predictor_lines)
    return (
        "\napiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
        f"metadata: {{name: {name}}}\nspec:\n  predictor:\n{extra}"
        f'    model: {{modelFormat: {{name: sklearn}}, storageUri: "file://{model}"}}\n'
    )


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the platform exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def call(port: int, path: str, host: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=BODY, method="POST")
    request.add_header("content-type", "application/json")
    if host:
        request.add_header("host", host)
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: bytes = response.read()
        return answer


def wrk(port: int, paths: str, host: str, conns: int, seconds: int, body: Path) -> str:
    env = {**os.environ, "BODY_FILE": str(body), "PATHS": paths, "HOST_HEADER": host}
    command = [
        "taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
        "--timeout", "10s", "--latency", "-s", str(HERE / "lua" / "paths.lua"),
        f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout


def parse(out: str) -> dict[str, float]:
    """wrk's report: req/s, requests completed, p50/p99 ms, non-2xx answers, socket errors."""

    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    pct = {
        m.group(1): ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    non2 = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
        "p50_ms": pct.get("50", float("nan")),
        "p99_ms": pct.get("99", float("nan")),
        "non2xx": float(non2.group(1)) if non2 else 0.0,
        "errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


@contextlib.contextmanager
def platform_up(home: Path, objects: Path, *options: str) -> Iterator[int]:
    """``modelhost up`` on SERVER_CPU with ``objects`` applied and ready; yields its port."""
    port, grpc_port = free_port(), free_port()
    platform = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *MODELHOST, "up", "--home", str(home),
         "--port", str(port), "--grpc-port", str(grpc_port), *options],
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", platform)
        subprocess.run(
            [*MODELHOST, "apply", "-f", str(objects), "--server", f"unix:{home / 'api.sock'}",
             "--wait", "--timeout", "120"],
            check=True,
        )  # fmt: skip
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(platform.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            platform.wait(30)


def results_folder(scenario: str) -> Path:
    """Where a scenario's results go: ``OUT``, or ``bench/results/<UTC time>-<scenario>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = Path(os.environ.get("OUT", HERE / "results" / f"{stamp}-{scenario}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def publish(out_dir: Path, name: str, text: str) -> None:
    """``text`` written to ``out_dir / name``, and printed with where it went."""
    (out_dir / name).write_text(text)
    print(text)
    print(f"written to {out_dir}")


def main() -> int:
    out_dir = results_folder("graph")
    work = Path(tempfile.mkdtemp(prefix="graph-bench-"))
    model = iris_model(work / "iris")
    objects = work / "objects.yaml"
    services = [iris_service("iris-a", model), iris_service("iris-b", model)]
    objects.write_text("---".join([*services, GRAPH]))
    body = work / "body.json"
    body.write_bytes(BODY)
    rows: list[dict[str, object]] = []
    for pass_number in range(1, PASSES + 1):
        for mode in MODES:
            rows += measure(mode, pass_number, work / f"home-{mode}-{pass_number}", objects, body)
    write(out_dir, rows)
    return 0


def measure(
    mode: str, pass_number: int, home: Path, objects: Path, body: Path
) -> list[dict[str, object]]:
    """Every load on a platform whose graph routers run ``mode``."""
    rows: list[dict[str, object]] = []
    with platform_up(home, objects, "--graph-router", mode) as port:
        # The graph's answer is iris-b's answer to the graph's request: check it first.
        expected = call(port, "/v1/models/iris-b:predict", "")
        got = call(port, "/", GRAPH_HOST)
        if json.loads(got) != json.loads(expected):
            raise RuntimeError(f"the graph answered {got!r}, iris-b {expected!r}")
        for conns in CONNS:
            for round_number in range(1, ROUNDS + 1):
                for load, (paths, host) in LOADS.items():
                    if round_number == 1:
                        wrk(port, paths, host, conns, WARM, body)
                    measured = parse(wrk(port, paths, host, conns, DUR, body))
                    row = {
                        "pass": pass_number,
                        "round": round_number,
                        "mode": mode,
                        "load": load,
                        "conns": conns,
                    }
                    rows.append({**row, **measured})
                    print(
                        f"pass {pass_number}.{round_number} {mode:10} {load:6} c={conns:<3} "
                        f"{measured}",
                        flush=True,
                    )
    return rows


def write(out_dir: Path, rows: list[dict[str, object]]) -> None:
    with (out_dir / "graph.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| router | conns | pass.round | direct req/s | pair calls/s | graph req/s | "
        "direct p50/p99 ms | graph p50/p99 ms | graph added cost / one direct call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = ["| router | conns | rounds | added cost, median of the rounds | target ≤ 20% |"]
    summary.append("|---|---:|---:|---:|---|")
    rounds = sorted({(int(str(r["pass"])), int(str(r["round"]))) for r in rows})
    for mode in MODES:
        for conns in sorted({int(str(r["conns"])) for r in rows}):
            added_per_round = []
            for pass_number, round_number in rounds:
                loads = {
                    str(r["load"]): r
                    for r in rows
                    if r["mode"] == mode
                    and r["conns"] == conns
                    and r["pass"] == pass_number
                    and r["round"] == round_number
                }
                if len(loads) != len(LOADS):
                    continue
                # Within one round, on one platform: the ratios the issue asks for.
                direct, pair, graph = (float(str(loads[k]["rps"])) for k in LOADS)
                added = (1 / graph - 2 / pair) * direct
                added_per_round.append(added)
                lines.append(
                    f"| {mode} | {conns} | {pass_number}.{round_number} | {direct:,.0f} | "
                    f"{pair:,.0f} | {graph:,.0f} | {loads['direct']['p50_ms']:.2f} / "
                    f"{loads['direct']['p99_ms']:.2f} | {loads['graph']['p50_ms']:.2f} / "
                    f"{loads['graph']['p99_ms']:.2f} | {added:+.0%} |"
                )
            if added_per_round:
                median = statistics.median(added_per_round)
                verdict = "met" if median <= TARGET else "not met"
                summary.append(
                    f"| {mode} | {conns} | {len(added_per_round)} | {median:+.0%} | {verdict} |"
                )
    publish(out_dir, "graph.md", "\n".join(lines) + "\n\n" + "\n".join(summary) + "\n")


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to a server's process group, SIGKILL after ``grace`` seconds (the benches')."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
