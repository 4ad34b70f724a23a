"""How many models one server holds: ``modelhost serve`` of a folder of N small sklearn models.

N (``N``, default 10,000) tiny models (LogisticRegression and DecisionTree, each with
weights of its own, on iris' four features; joblib-saved with an MLServer
``model-settings.json``, one folder each) are generated into ``MODELS`` (a temporary
folder by default; an existing folder of N is reused). The server runs pinned to core 0,
this client on core 1. Figures:

1. **Start-up, no budget.** Time from the process start to: listening, the index listing
   all N, the first answer of a request to a random model (not loaded yet: it loads on
   demand), and all N loaded (the index polled every second). RSS with all loaded, and
   bytes per loaded model above a one-model server's RSS.
2. **Where the bytes go** (in this process, tracemalloc, ``BREAKDOWN`` models): the
   estimator objects, our model wrapper, the repository's bookkeeping, and the metric
   label children a model gets on its first request.
3. **Eviction, ``--max-loaded-models 1000``.** Once 1,000 are loaded: one client, one
   request at a time, ``REQUESTS`` requests to models never loaded (each loads on demand and
   evicts one), then ``REQUESTS`` to models loaded; p50/p99 of each, against the same
   client's requests to a one-model server (target: evicted p99 ≤ 50 ms, loaded p99 ≤ 1.2 times
   the one-model server's).
4. **MLServer** (``MLSERVER``, the peers' venv; ``PEER_S`` seconds) on the same folder,
   defaults: models ready after 60 and 120 s and its RSS (all its processes), then stopped.

    .venv/bin/python bench/density_scenario.py          # N=10000 REQUESTS=1000 PARTS="..."

Results go to ``OUT/density.md`` (default ``bench/results/<UTC time>/``). ``PARTS`` picks
parts (``startup breakdown eviction mlserver``). Needs taskset.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from graph_scenario import stop_process_group  # noqa: E402

N = int(os.environ.get("N", "10000"))
REQUESTS = int(os.environ.get("REQUESTS", "1000"))
BUDGET = int(os.environ.get("BUDGET", "1000"))
BREAKDOWN = int(os.environ.get("BREAKDOWN", "1000"))
PEER_S = [int(s) for s in os.environ.get("PEER_S", "60 120").split()]
PARTS = os.environ.get("PARTS", "startup breakdown eviction mlserver").split()
SERVER_CPU, LOAD_CPU = os.environ.get("SERVER_CPU", "0"), os.environ.get("LOAD_CPU", "1")
MLSERVER = os.environ.get("MLSERVER", "/tmp/peers/mlserver/bin/mlserver")
MODELHOST = [sys.executable, "-m", "modelhost"]
ROW = [6.8, 2.8, 4.8, 1.4]
V1_BODY = json.dumps({"instances": [ROW]}).encode()
V2_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
).encode()


# -- the models ------------------------------------------------------------------------


def model_name(index: int) -> str:
    return f"m{index:05d}"


def make_models(root: Path, count: int) -> Path:
    """``count`` model folders under ``root`` (kept when they are there already).

    Even indexes: a LogisticRegression fitted on iris once, its coefficients then moved by
    noise of their own (no fit per model: 10,000 fits take minutes); odd: a DecisionTree
    of depth 3 fitted on 30 noisy iris rows of its own.
    """
    import copy

    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    root.mkdir(parents=True, exist_ok=True)
    if len([p for p in root.iterdir() if p.is_dir()]) == count:
        return root
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    x, y = load_iris(return_X_y=True)
    base = LogisticRegression(max_iter=1000).fit(x, y)
    for index in range(count):
        estimator: Any
        if index % 2 == 0:
            estimator = copy.deepcopy(base)
            estimator.coef_ = base.coef_ + rng.normal(scale=0.3, size=base.coef_.shape)
        else:
            rows = rng.choice(len(x), size=30, replace=False)
            noisy = x[rows] + rng.normal(scale=0.2, size=(30, 4))
            estimator = DecisionTreeClassifier(max_depth=3, random_state=index)
            estimator.fit(noisy, y[rows])
        folder = root / model_name(index)
        folder.mkdir(exist_ok=True)
        joblib.dump(estimator, folder / "model.joblib")
        settings = {
            "name": model_name(index),
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib"},
        }
        (folder / "model-settings.json").write_text(json.dumps(settings))
    print(f"generated {count} models in {time.perf_counter() - started:.0f}s", flush=True)
    return root


def one_model_folder(models: Path, work: Path) -> Path:
    """A folder with the first model alone (the one-model server's)."""
    import shutil

    single = work / "single"
    if not single.exists():
        shutil.copytree(models / model_name(0), single)
        (single / "model-settings.json").unlink()
    return single


# -- processes and HTTP --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes(pid: int, with_children: bool = False) -> int:
    """Resident memory of ``pid`` (and of its descendants)."""
    pids = [pid]
    if with_children:
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
        parents: dict[int, list[int]] = {}
        for line in out.stdout.splitlines():
            child, parent = (int(v) for v in line.split())
            parents.setdefault(parent, []).append(child)
        index = 0
        while index < len(pids):
            pids.extend(parents.get(pids[index], []))
            index += 1
    total = 0
    for each in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Client:
    """One keep-alive HTTP/1.1 connection; every call timed by the caller."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise

    def index(self) -> list[dict[str, Any]]:
        status, body = self.call("POST", "/v2/repository/index", b"{}")
        if status != 200:
            raise RuntimeError(f"index answered {status}")
        entries: list[dict[str, Any]] = json.loads(body)
        return entries

    def close(self) -> None:
        self.connection.close()


def wait_until(check: Any, timeout: float, every: float = 0.01) -> float:
    """Seconds until ``check()`` is true (polled every ``every`` s); raises after ``timeout``."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with contextlib.suppress(OSError, http.client.HTTPException, RuntimeError):
            if check():
                return time.perf_counter() - started
        time.sleep(every)
    raise RuntimeError(f"not done in {timeout}s")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    started: float  # perf_counter at the process start


@contextlib.contextmanager
def modelhost_serve(target: Path, *flags: str) -> Iterator[Server]:
    port = free_port()
    command = ["taskset", "-c", SERVER_CPU, *MODELHOST, "serve", str(target)]
    command += ["--http-port", str(port), "--enable-grpc", "false", *flags]
    started = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        yield Server(process, port, started)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_process_group(process, grace=20.0)


def listening(client: Client) -> bool:
    return client.call("GET", "/v2/health/live")[0] == 200


def ready_count(client: Client) -> int:
    return sum(1 for entry in client.index() if entry["state"] == "READY")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed_calls(client: Client, paths: list[str], body: bytes) -> list[float]:
    """Milliseconds of each call, one at a time; any answer but 200 fails the bench."""
    times = []
    for path in paths:
        began = time.perf_counter()
        status, answer = client.call("POST", path, body)
        times.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {answer[:200]!r}")
    return times


def one_model_rss(single: Path) -> int:
    """RSS of a one-model server after 200 requests (the baseline of bytes per model)."""
    with modelhost_serve(single, "--name", "single") as server:
        client = Client(server.port)
        wait_until(lambda: listening(client), 60)
        timed_calls(client, ["/v2/models/single/infer"] * 200, V2_BODY)
        rss = rss_bytes(server.process.pid)
        client.close()
    return rss


# -- the parts -------------------------------------------------------------------------


def startup(models: Path, single: Path) -> list[str]:
    base_rss = one_model_rss(single)
    names = [model_name(i) for i in range(N)]
    with modelhost_serve(models) as server:
        client = Client(server.port)
        wait_until(lambda: listening(client), 120)
        since = server.started
        listen_s = time.perf_counter() - since
        wait_until(lambda: len(client.index()) == N, 60)
        listed_s = time.perf_counter() - since
        name = random.Random(1).choice(names[N // 2 :])
        status, _ = client.call("POST", f"/v1/models/{name}:predict", V1_BODY)
        answered_s = time.perf_counter() - since
        if status != 200:
            raise RuntimeError(f"{name} answered {status}")
        counts: list[tuple[float, int]] = []

        def all_loaded() -> bool:
            counts.append((time.perf_counter() - since, ready_count(client)))
            return counts[-1][1] == N

        wait_until(all_loaded, 600, every=1.0)
        loaded_s = time.perf_counter() - since
        rss = rss_bytes(server.process.pid)
        # Each model's first request makes its metric label children: the worst case.
        began = time.perf_counter()
        timed_calls(client, [f"/v2/models/{n}/infer" for n in names], V2_BODY)
        every_s = time.perf_counter() - began
        rss_requested = rss_bytes(server.process.pid)
        client.close()
    per_model = (rss - base_rss) / N
    per_requested = (rss_requested - base_rss) / N
    return [
        f"## Start-up of {N} models, no budget (server on core {SERVER_CPU})",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| listening | {listen_s:.2f} s | |",
        f"| index lists all {N} | {listed_s:.2f} s | ≤ 5 s |",
        f"| a request to a random model (not loaded) answered | {answered_s:.2f} s | ≤ 5 s |",
        f"| all {N} loaded | {loaded_s:.1f} s | ≤ 60 s |",
        f"| RSS, all loaded | {rss / 2**20:.0f} MiB | ≤ 2048 MiB |",
        f"| RSS of a one-model server | {base_rss / 2**20:.0f} MiB | |",
        f"| bytes per loaded model (RSS above the one-model server's / N) | "
        f"{per_model / 1024:.1f} KiB | |",
        f"| RSS after one request to each model ({every_s:.0f} s) | "
        f"{rss_requested / 2**20:.0f} MiB | ≤ 2048 MiB |",
        f"| bytes per model then (its metric children included) | "
        f"{per_requested / 1024:.1f} KiB | |",
        "",
        "Loaded models over time (s: ready): "
        + ", ".join(f"{t:.0f}: {c}" for t, c in counts[:: max(1, len(counts) // 12)]),
        "",
    ]


# Where an allocation is charged: the first of these found in its traceback, newest first.
OWNERS = (
    ("joblib", "the sklearn estimator (unpickled: numpy arrays, attributes)"),
    ("pickle", "the sklearn estimator (unpickled: numpy arrays, attributes)"),
    ("sklearn", "the sklearn estimator (unpickled: numpy arrays, attributes)"),
    ("modelhost/runtimes", "our model wrapper (SKLearnModel, its spec and settings)"),
    ("modelhost/model/repository", "the repository (dicts, LRU, per-name lock)"),
    ("modelhost/model/preloader", "the background loader"),
)


def owner_of(trace: tracemalloc.Traceback) -> str:
    for frame in reversed(trace):
        for part, owner in OWNERS:
            if part in frame.filename:
                return owner
    return "other"


def breakdown(models: Path) -> list[str]:
    """Bytes per loaded model in this process, by owner (tracemalloc, charged by traceback)."""
    from modelhost.model.preloader import Preloader
    from modelhost.model.repository import ModelRepository
    from modelhost.runtimes import sklearn as sklearn_runtime
    from modelhost.runtimes.model_folder import ModelFolder
    from modelhost.server.metrics import Metrics

    count = min(BREAKDOWN, N)
    folder = ModelFolder(models)
    names = folder.names()[:count]
    warm = sklearn_runtime.SKLearnModel("warm", models / names[0])
    warm.load()  # imports and first-use caches outside the measure
    tracemalloc.start(40)
    before = tracemalloc.take_snapshot()
    repository = ModelRepository(folder.build, lambda: names)
    repository.defer_all(names)
    known = tracemalloc.take_snapshot()
    Preloader(repository, names).run()
    loaded = tracemalloc.take_snapshot()
    metrics = Metrics()
    metrics_before = tracemalloc.get_traced_memory()[0]
    for name in names:
        metrics.observe_request(name, "v2", "infer", 200, 0.001)
        metrics.observe_step(metrics.predict, name, 0.0005)
    metrics_bytes = tracemalloc.get_traced_memory()[0] - metrics_before
    tracemalloc.stop()
    known_bytes = sum(stat.size_diff for stat in known.compare_to(before, "filename"))
    owners: dict[str, int] = {}
    for stat in loaded.compare_to(known, "traceback"):
        owner = owner_of(stat.traceback)
        owners[owner] = owners.get(owner, 0) + stat.size_diff
    lines = [
        f"## Where the bytes of a loaded model go ({count} models, in-process, tracemalloc)",
        "",
        "| owner | bytes per model |",
        "|---|---|",
        f"| known, not loaded (the repository's state and deferral entries) | "
        f"{known_bytes / count:,.0f} |",
        f"| loaded, all Python allocations | {sum(owners.values()) / count:,.0f} |",
    ]
    lines += [
        f"| - {owner} | {size / count:,.0f} |"
        for owner, size in sorted(owners.items(), key=lambda item: -item[1])
    ]
    lines.append(
        f"| metric label children on its first request (a counter, two histograms) | "
        f"{metrics_bytes / count:,.0f} |"
    )
    return [*lines, ""]


def eviction(models: Path, single: Path) -> list[str]:
    names = [model_name(i) for i in range(N)]
    with (
        modelhost_serve(single, "--name", "single") as one,
        modelhost_serve(models, "--max-loaded-models", str(BUDGET)) as server,
    ):
        client, single_client = Client(server.port), Client(one.port)
        wait_until(lambda: listening(client), 120)
        wait_until(lambda: listening(single_client), 120)
        fill_s = wait_until(lambda: ready_count(client) >= BUDGET, 300, every=0.5)
        loaded = {e["name"] for e in client.index() if e["state"] == "READY"}
        fresh = [n for n in names if n not in loaded]
        random.Random(2).shuffle(fresh)
        cold = fresh[:REQUESTS]
        cold_times = timed_calls(client, [f"/v2/models/{n}/infer" for n in cold], V2_BODY)
        # The last models loaded are the most recently used: loaded, and not next to go.
        hot = cold[-min(len(cold), BUDGET // 2) :]
        hot_paths = [f"/v2/models/{random.Random(i).choice(hot)}/infer" for i in range(REQUESTS)]
        single_paths = ["/v2/models/single/infer"] * REQUESTS
        timed_calls(single_client, single_paths[:200], V2_BODY)
        timed_calls(client, hot_paths[:200], V2_BODY)
        # Blocks of 50, one server then the other: both see the same noise of the machine.
        hot_times: list[float] = []
        single_times: list[float] = []
        for start in range(0, REQUESTS, 50):
            hot_times += timed_calls(client, hot_paths[start : start + 50], V2_BODY)
            single_times += timed_calls(single_client, single_paths[start : start + 50], V2_BODY)
        still = ready_count(client)
        rss = rss_bytes(server.process.pid)
        client.close()
        single_client.close()
    ratio = percentile(hot_times, 0.99) / percentile(single_times, 0.99)
    return [
        f"## Eviction: {N} models, --max-loaded-models {BUDGET}, one client (core {LOAD_CPU})",
        "",
        f"{BUDGET} loaded {fill_s:.1f} s after listening; {still} loaded at the end; "
        f"RSS {rss / 2**20:.0f} MiB.",
        "",
        "| requests | n | p50 ms | p99 ms | target |",
        "|---|---|---|---|---|",
        f"| to evicted / never loaded models (load on demand) | {len(cold_times)} | "
        f"{statistics.median(cold_times):.2f} | {percentile(cold_times, 0.99):.2f} | "
        "p99 ≤ 50 ms |",
        f"| to loaded models | {len(hot_times)} | {statistics.median(hot_times):.3f} | "
        f"{percentile(hot_times, 0.99):.3f} | p99 ≤ 1.2 times one-model |",
        f"| to a one-model server | {len(single_times)} | "
        f"{statistics.median(single_times):.3f} | {percentile(single_times, 0.99):.3f} | |",
        "",
        f"Loaded p99 / one-model p99: {ratio:.2f}.",
        "",
    ]


def mlserver(models: Path, work: Path) -> list[str]:
    if not Path(MLSERVER).exists():
        return ["## MLServer", "", f"{MLSERVER} not found: skipped.", ""]
    port = free_port()
    env = {
        **os.environ,
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
    }
    home = work / "mlserver-home"
    home.mkdir(exist_ok=True)
    command = ["taskset", "-c", SERVER_CPU, MLSERVER, "start", str(models)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=home,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = Client(port)
    rows = []
    listen_s: float | None = None
    try:
        for mark in PEER_S:
            while time.perf_counter() - started < mark:
                if listen_s is None:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        if listening(client):
                            listen_s = time.perf_counter() - started
                time.sleep(0.5)
            ready = f"no answer by {mark} s"
            for _ in range(2):  # a connection MLServer dropped while it started: once more
                try:
                    ready = str(ready_count(client))
                    break
                except (OSError, http.client.HTTPException, RuntimeError) as exc:
                    ready = f"no answer ({type(exc).__name__})"
            rss = rss_bytes(process.pid, with_children=True)
            exited = process.poll()
            note = f"exited with {exited}" if exited is not None else ""
            rows.append(f"| {mark} s | {ready} | {rss / 2**20:.0f} MiB | {note} |")
    finally:
        client.close()
        stop(process)
    listened = f"{listen_s:.1f} s" if listen_s is not None else "never within the run"
    return [
        f"## MLServer (defaults) on the same {N} models, core {SERVER_CPU}",
        "",
        f"Listening (/v2/health/live 200) after: {listened}.",
        "",
        "| after | models READY in its index | RSS (all its processes) | |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def main() -> int:
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = Path(os.environ.get("OUT", HERE / "results" / stamp))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="density-") as temporary:
        work = Path(temporary)
        models = make_models(Path(os.environ.get("MODELS", work / "models")), N)
        single = one_model_folder(models, work)
        lines = [f"# Density: one `modelhost serve` of {N} sklearn models", ""]
        parts = {
            "startup": lambda: startup(models, single),
            "breakdown": lambda: breakdown(models),
            "eviction": lambda: eviction(models, single),
            "mlserver": lambda: mlserver(models, work),
        }
        for part in PARTS:
            print(f"-- {part}", flush=True)
            lines += parts[part]()
    text = "\n".join(lines)
    (out_dir / "density.md").write_text(text)
    print(text)
    print(f"written to {out_dir / 'density.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
