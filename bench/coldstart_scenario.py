"""How fast a model server starts cold, and how fast the platform answers from zero.

1. **A server's cold start.** Each server is started afresh ``STARTS`` times, alone on core 0
   (``SERVER_CPU``), on free loopback ports; this script (pinned to core 1, ``LOAD_CPU``)
   times from the exec to the HTTP port *listening* (a TCP connect succeeds) and to the
   *first correct answer* to a v2 REST infer, which it posts again and again until one comes.
   The server's CPU time up to that answer (its process tree's, from ``/proc``) is counted
   too: on a shared machine it moves less than the wall clock does. The servers:
   ``modelhost serve`` of iris (a scikit-learn LogisticRegression, gRPC on and off; its
   fast-start cache primed before the starts, as any start after a model file's first leaves
   it, and once with none: ``(no fast start)``, what a model file's first start costs), KServe's
   sklearn server (``../shared/bench/kserve_sklearn.py``), MLServer with mlserver-sklearn
   (defaults: one worker process; and ``MLSERVER_PARALLEL_WORKERS=0``), and both modelhost
   and KServe serving ``bench/models/bench_models.py:MLP``, a small torch model.
2. **The platform.** ``modelhost up`` (its own home in a temporary folder, on core 0 with its
   replicas), once per ``PLATFORM_MODES`` entry: ``zygote`` (the default: tabular replicas
   fork from a pre-imported interpreter, once it is ready) and ``spawn`` (``--no-zygote``).
   Timed there: ``modelhost apply --wait`` of a new iris InferenceService (the command's
   wall time, run on core 1, ``STARTS`` services), and the first request after scale to
   zero: an iris service with ``minReplicas: 0`` (and a 1 s stable window), left until it
   has no replica, then one v2 REST infer through the gateway, timed end to end.

    .venv/bin/python bench/coldstart_scenario.py            # STARTS=5, ~10 minutes
    SERVERS="modelhost iris,kserve iris" PARTS=servers .venv/bin/python bench/coldstart_scenario.py
    BASELINE=/tmp/base .venv/bin/python bench/coldstart_scenario.py   # against another checkout

Starts go round: start 1 of every server, then start 2, so that a load passing on the machine
falls on all of them. ``SERVERS`` picks servers by "name model" (comma-separated), ``PARTS``
the parts (``servers platform``), ``PLATFORM_MODES`` the platforms. ``BASELINE`` names a
folder holding another ``modelhost`` package (``git archive HEAD modelhost | tar -x -C
/tmp/base``): its servers start beside this checkout's, as ``modelhost@baseline``.

The peers come from ``bench/setup.sh`` (venvs under ``PEERS``, ``/tmp/peers``); a peer that
is not installed is left out, with a line saying so. Results go to ``OUT/coldstart.md``,
``OUT/coldstart.csv`` and ``OUT/platform.csv`` (default ``bench/results/<UTC time>-coldstart``),
the servers' output to ``OUT/logs``.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from graph_scenario import (  # noqa: E402
    free_port,
    iris_model,
    iris_service,
    prime_fast_start,
    publish,
    results_folder,
    stop_process_group,
)

ROOT = HERE.parent
PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared" / "bench")).resolve()
STARTS = int(os.environ.get("STARTS", "5"))
SERVER_CPU, LOAD_CPU = os.environ.get("SERVER_CPU", "0"), os.environ.get("LOAD_CPU", "1")
PLATFORM_MODES = os.environ.get("PLATFORM_MODES", "zygote spawn").split()
# Another modelhost package's folder: the servers' working folder is not this checkout, so
# PYTHONPATH picks which modelhost they import.
BASELINE = os.environ.get("BASELINE", "")
MODELHOST = [sys.executable, "-m", "modelhost"]
MODELS = HERE / "models"
KSERVE_PY = PEERS / "kserve" / "bin" / "python"
# A start that has not answered by then has failed.
START_TIMEOUT_S = 120.0
HZ = os.sysconf("SC_CLK_TCK")

IRIS_ROW = [6.8, 2.8, 4.8, 1.4]
IRIS_BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}
MLP_BODY = {
    "inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [i / 64 for i in range(64)]}
    ]
}


def iris_answer(answer: dict[str, Any]) -> bool:
    return bool(answer["outputs"][0]["data"] == [1])


def mlp_answer(answer: dict[str, Any]) -> bool:
    output = answer["outputs"][0]
    return bool(output["shape"] == [1, 10] and len(output["data"]) == 10)


@dataclass
class Server:
    """One server to start: its command (``{http}``, ``{grpc}`` and ``{metrics}`` stand for
    its ports), environment, model, and what a correct answer holds."""

    name: str
    command: list[str]
    model: str
    body: dict[str, Any]
    correct: Callable[[dict[str, Any]], bool]
    env: dict[str, str] = field(default_factory=dict)
    needs: Path | None = None  # a peer's venv: the server is left out without it


def servers(iris: Path) -> list[Server]:
    """The servers to start; modelhost's read the fast-start cache that ``main`` primed
    (``MODELHOST_FAST_START_DIR``, set for the whole run)."""
    ports = ["--http_port", "{http}", "--grpc_port", "{grpc}"]
    modelhost_iris = [*MODELHOST, "serve", str(iris), "--name", "iris", "--host", "127.0.0.1"]
    modelhost_mlp = [*MODELHOST, "serve", str(MODELS), "--model-class", "bench_models:MLP"]
    kserve_iris = [str(KSERVE_PY), str(SHARED / "kserve_sklearn.py"), "--model_name", "iris"]
    kserve_mlp = [str(KSERVE_PY), str(MODELS / "bench_models.py"), "--model_name", "mlp"]
    kserve_mlp += ["--kind", "mlp"]
    mlserver = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "{http}",
        "MLSERVER_GRPC_PORT": "{grpc}",
        "MLSERVER_METRICS_PORT": "{metrics}",
    }
    mlserver_start = [str(PEERS / "mlserver" / "bin" / "mlserver"), "start", str(iris)]
    # Kept: PYTHONPATH may point the servers at another modelhost (a baseline checkout).
    on_path = {"PYTHONPATH": str(MODELS)}
    chosen = [
        Server("modelhost", [*modelhost_iris, *ports], "iris", IRIS_BODY, iris_answer),
        Server(
            "modelhost (no gRPC)",
            [*modelhost_iris, *ports, "--enable_grpc", "false"],
            "iris",
            IRIS_BODY,
            iris_answer,
        ),
        Server(
            "modelhost (no fast start)",
            [*modelhost_iris, *ports, "--option", "fast_start_dir="],
            "iris",
            IRIS_BODY,
            iris_answer,
        ),
        Server(
            "kserve",
            [*kserve_iris, "--model_dir", str(iris), *ports],
            "iris",
            IRIS_BODY,
            iris_answer,
            needs=KSERVE_PY,
        ),
        Server(
            "mlserver", mlserver_start, "iris", IRIS_BODY, iris_answer, mlserver, PEERS / "mlserver"
        ),
        Server(
            "mlserver (no worker)",
            mlserver_start,
            "iris",
            IRIS_BODY,
            iris_answer,
            {**mlserver, "MLSERVER_PARALLEL_WORKERS": "0"},
            PEERS / "mlserver",
        ),
        Server(
            "modelhost",
            [*modelhost_mlp, "--name", "mlp", "--host", "127.0.0.1", *ports],
            "mlp",
            MLP_BODY,
            mlp_answer,
            on_path,
        ),
        Server(
            "kserve",
            [*kserve_mlp, *ports],
            "mlp",
            MLP_BODY,
            mlp_answer,
            on_path,
            needs=KSERVE_PY,
        ),
    ]
    if BASELINE:
        # The same modelhost servers on another checkout's package, started in turn with these.
        others = [s for s in chosen if s.name.startswith("modelhost")]
        chosen += [baseline_of(server, Path(BASELINE)) for server in others]
    return chosen


def baseline_of(server: Server, package_root: Path) -> Server:
    path = os.pathsep.join(filter(None, (str(package_root), server.env.get("PYTHONPATH"))))
    return Server(
        server.name.replace("modelhost", "modelhost@baseline", 1),
        server.command,
        server.model,
        server.body,
        server.correct,
        {**server.env, "PYTHONPATH": path},
        needs=package_root / "modelhost",
    )


# -- one server's cold start ------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    listening_s: float
    answer_s: float
    cpu_s: float  # the server's process tree's CPU time up to the answer


def start_once(server: Server, workdir: Path, log: Path) -> Start:
    ports = {"http": str(free_port()), "grpc": str(free_port()), "metrics": str(free_port())}
    command = [part.format(**ports) for part in server.command]
    env = {**os.environ, **{k: v.format(**ports) for k, v in server.env.items()}}
    http_port = int(ports["http"])
    body = json.dumps(server.body).encode()
    path = f"/v2/models/{server.model}/infer"
    with log.open("ab") as output:
        started = time.perf_counter()
        # taskset execs the server: the pid is the server's.
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command],
            cwd=workdir,  # MLServer writes .envs and .metrics where it runs
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        listening = _until(process, started, lambda: _connects(http_port))
        answered = _until(process, started, lambda: _answers(http_port, path, body, server))
        cpu = _tree_ticks(process.pid) / HZ
        return Start(listening - started, answered - started, cpu)
    finally:
        stop_process_group(process)


def _until(process: subprocess.Popen[bytes], started: float, check: Callable[[], bool]) -> float:
    while not check():
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} (see the log)")
        if time.perf_counter() - started > START_TIMEOUT_S:
            raise RuntimeError(f"no answer in {START_TIMEOUT_S:.0f}s (see the log)")
        time.sleep(0.001)
    return time.perf_counter()


def _connects(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _answers(port: int, path: str, body: bytes, server: Server) -> bool:
    answer = _post(port, path, body)
    return answer is not None and server.correct(answer)


def _post(port: int, path: str, body: bytes, host: str = "") -> dict[str, Any] | None:
    """The JSON answer of a 200, or None (refused, not ready yet, or not JSON)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json", **({"host": host} if host else {})}
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        data = response.read()
    except OSError:
        return None
    finally:
        connection.close()
    if response.status != 200:
        return None
    with contextlib.suppress(ValueError):
        answer: dict[str, Any] = json.loads(data)
        return answer
    return None


def _tree_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and its descendants, in clock ticks."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


def server_starts(out_dir: Path, work: Path, iris: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """STARTS starts of each server, in turn (start 1 of each, then start 2, ...): a load that
    comes and goes on the machine falls on every server alike."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    wanted = os.environ.get("SERVERS")
    chosen: list[tuple[Server, str, Path]] = []
    for server in servers(iris):
        label = f"{server.name} {server.model}"
        if wanted and label not in wanted.split(","):
            continue
        if server.needs is not None and not server.needs.exists():
            notes.append(f"{label}: left out, {server.needs} is not installed (bench/setup.sh)")
            continue
        log = out_dir / "logs" / (re.sub(r"[^A-Za-z0-9@.-]+", "-", label) + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        chosen.append((server, label, log))
    for number in range(1, STARTS + 1):
        for server, label, log in chosen:
            try:
                start = start_once(server, work, log)
            except RuntimeError as exc:
                notes.append(f"{label}, start {number}: {exc} ({log.name})")
                print(f"{label} start {number}: FAILED {exc}", flush=True)
                continue
            row = {"server": server.name, "model": server.model, "start": number}
            row.update(
                listening_s=round(start.listening_s, 3),
                answer_s=round(start.answer_s, 3),
                cpu_s=round(start.cpu_s, 2),
            )
            rows.append(row)
            print(f"{label} start {number}: {row}", flush=True)
    return rows, notes


# -- the platform -----------------------------------------------------------------------------


@contextlib.contextmanager
def platform(home: Path, mode: str) -> Iterator[tuple[int, Path]]:
    """``modelhost up`` on SERVER_CPU, its zygote ready (mode ``zygote``); yields its HTTP
    gateway's port and its log."""
    port, grpc_port = free_port(), free_port()
    home.mkdir(parents=True)
    config = home.parent / f"{home.name}-config.yaml"
    # Scale to zero a second after the last request, not after Knative's minute.
    config.write_text("stable_window_s: 1.0\nscale_to_zero_grace_period_s: 0.2\n")
    log = home.parent / f"{home.name}.log"
    options = ["--no-zygote"] if mode == "spawn" else []
    with log.open("ab") as output:
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *MODELHOST, "up", "--home", str(home),
             "--port", str(port), "--grpc-port", str(grpc_port), "--config", str(config),
             *options],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        started = time.perf_counter()
        _until(process, started, lambda: _gets(port, "/healthz"))
        if mode == "zygote":
            # Until then replicas spawn: what is timed is the platform as it runs for good.
            _until(process, started, lambda: "zygote" in _zygote_state(log))
            print(f"platform {mode}: {_zygote_state(log)}", flush=True)
        yield port, log
    finally:
        stop_process_group(process)


def _gets(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _zygote_state(log: Path) -> str:
    """The platform log's line on its zygote (ready, or did not start), or ""."""
    for line in log.read_text(errors="replace").splitlines():
        if "zygote ready" in line or "zygote did not start" in line:
            return line.split(": ", 1)[-1]
    return ""


def apply_wait(home: Path, document: str, work: Path) -> float:
    """Seconds ``modelhost apply -f FILE --wait`` takes, run on LOAD_CPU."""
    path = work / "apply.yaml"
    path.write_text(document)
    command = ["taskset", "-c", LOAD_CPU, *MODELHOST, "apply", "-f", str(path), "--wait"]
    command += ["--server", f"unix:{home / 'api.sock'}", "--timeout", "120"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def replicas(home: Path, name: str) -> int:
    from modelhost.local.client import PlatformClient

    rows = PlatformClient(f"unix:{home / 'api.sock'}").revisions("default", name)
    return sum(len(row.get("replicas") or ()) for row in rows)


def wait_for_zero(home: Path, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while replicas(home, name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} kept a replica for {timeout:.0f}s")
        time.sleep(0.05)


def platform_figures(work: Path, iris: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    body = json.dumps(IRIS_BODY).encode()
    for mode in PLATFORM_MODES:
        home = work / f"home-{mode}"
        with platform(home, mode) as (port, log):
            if mode == "zygote":
                notes.append(f"platform {mode}: {_zygote_state(log)}")
            for number in range(1, STARTS + 1):
                seconds = apply_wait(home, iris_service(f"iris-new-{number}", iris), work)
                rows.append({"mode": mode, "figure": "apply --wait", "run": number, "s": seconds})
                print(f"platform {mode} apply --wait {number}: {seconds:.3f}s", flush=True)
            zero = iris_service("iris-zero", iris, "minReplicas: 0")
            apply_wait(home, zero, work)
            for number in range(1, STARTS + 1):
                wait_for_zero(home, "iris-zero")
                started = time.perf_counter()
                answer = _post(port, "/v2/models/iris-zero/infer", body)
                seconds = time.perf_counter() - started
                if answer is None or not iris_answer(answer):
                    raise RuntimeError(f"the gateway answered {answer!r}")
                rows.append({"mode": mode, "figure": "from zero", "run": number, "s": seconds})
                print(f"platform {mode} first request from zero {number}: {seconds:.3f}s")
    return rows, notes


# -- the report -------------------------------------------------------------------------------


def _spread(values: list[float], unit: str = "s") -> str:
    median = statistics.median(values)
    return f"{median:.2f} {unit} ({min(values):.2f} to {max(values):.2f})"


def report(starts: list[dict[str, Any]], figures: list[dict[str, Any]], notes: list[str]) -> str:
    lines = [
        f"Medians of {STARTS} starts (min to max); each server alone on core {SERVER_CPU}, the "
        f"client on core {LOAD_CPU}. CPU: the server's processes' CPU time up to the answer.",
    ]
    if starts:
        lines += [
            "",
            "| server | model | exec → listening | exec → first correct v2 answer "
            "| CPU to answer |",
            "|---|---|---:|---:|---:|",
        ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in starts:
        groups.setdefault((row["server"], row["model"]), []).append(row)
    for (server, model), rows in groups.items():
        listening = _spread([r["listening_s"] for r in rows])
        answer = _spread([r["answer_s"] for r in rows])
        cpu = _spread([r["cpu_s"] for r in rows])
        lines.append(f"| {server} | {model} | {listening} | {answer} | {cpu} |")
    if figures:
        lines += [
            "",
            "| platform | `apply --wait` of a new iris service | first request after scale "
            "to zero, end to end |",
            "|---|---:|---:|",
        ]
        for mode in PLATFORM_MODES:
            applied = [
                r["s"] for r in figures if r["mode"] == mode and r["figure"] == "apply --wait"
            ]
            zero = [r["s"] for r in figures if r["mode"] == mode and r["figure"] == "from zero"]
            if applied and zero:
                lines.append(f"| {mode} | {_spread(applied)} | {_spread(zero)} |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> int:
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    out_dir = results_folder("coldstart")
    work = Path(tempfile.mkdtemp(prefix="coldstart-bench-"))
    iris = PEERS / "models" / "iris"
    if not (iris / "model.joblib").exists():
        iris = iris_model(work / "iris")
    parts = os.environ.get("PARTS", "servers platform").split()
    # Every modelhost server and replica of this run, the platform's included, reads this one.
    os.environ["MODELHOST_FAST_START_DIR"] = str(work / "fast-start")
    prime_fast_start(iris, work / "fast-start")
    starts, notes = server_starts(out_dir, work, iris) if "servers" in parts else ([], [])
    figures: list[dict[str, Any]] = []
    if "platform" in parts:
        figures, platform_notes = platform_figures(work, iris)
        notes += platform_notes
    write_csv(out_dir / "coldstart.csv", starts)
    write_csv(out_dir / "platform.csv", figures)
    publish(out_dir, "coldstart.md", report(starts, figures, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
