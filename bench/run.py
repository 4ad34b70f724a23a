"""Times modelhost against KServe, MLServer and the minimal servers, in one run.

Each server runs alone, pinned to core 0, with the load generator (wrk for REST, h2load
for gRPC) pinned to core 1, on loopback. Every load is checked for a correct answer
first, warmed up, then measured. The results go to OUT (default bench/results/<UTC
time>): results.csv (one row per load), servers.csv (startup and memory) and
results.md (the tables and the target ratios). Run bench/setup.sh once first.

    python3 bench/run.py                      # every scenario
    python3 bench/run.py iris                 # one scenario: iris, tensor, mlp, gateway, access
    DUR=10 WARM=3 PASSES=2 python3 bench/run.py

Needs only the standard library (and ../shared/bench/benchlib.py for /proc sampling).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("SHARED", ROOT.parent / "shared" / "bench")).resolve()
sys.path[:0] = [str(HERE), str(SHARED)]
import access_scenario  # noqa: E402  (bench/access_scenario.py: the access scenario's servers)
import benchlib  # noqa: E402  (the shared harness's /proc and output parsers)
from graph_scenario import prime_fast_start  # noqa: E402  (bench/graph_scenario.py)

PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
DUR = int(os.environ.get("DUR", "10"))
WARM = int(os.environ.get("WARM", "3"))
PASSES = int(os.environ.get("PASSES", "1"))
CONNS = [int(c) for c in os.environ.get("CONNS", "1 8 64").split()]
SERVER_CPU, LOAD_CPU = os.environ.get("SERVER_CPU", "0"), os.environ.get("LOAD_CPU", "1")
HTTP = "http://127.0.0.1:8080"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
GRPC_URL = f"http://127.0.0.1:8081{GRPC_PATH}"
IRIS = PEERS / "models" / "iris"
BODIES = PEERS / "bodies"
MODELHOST = str(PEERS / "modelhost" / "bin" / "modelhost")
KSERVE_PY = str(PEERS / "kserve" / "bin" / "python")
MODELS = str(HERE / "models")


@dataclass
class Load:
    proto: str  # v1 | v2 | grpc | tensor-json | tensor-bin | mlp
    conns: list[int]


@dataclass
class Server:
    name: str
    cmd: list[str]
    loads: list[Load]
    ready: str = f"{HTTP}/v2/models/iris/ready"
    env: dict[str, str] = field(default_factory=dict)
    model: str = "iris"
    # KServe YAML applied once the process answers /healthz (the embedded platform).
    apply: str | None = None
    # The access scenario: "https" puts REST and gRPC over TLS; a token goes with every
    # request as `authorization: Bearer <token>` (and a request without it must be refused).
    scheme: str = "http"
    token: str = ""

    @property
    def http(self) -> str:
        return f"{self.scheme}://127.0.0.1:8080"

    @property
    def grpc_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:8081{GRPC_PATH}"

    def bearer(self) -> list[str]:
        """The header arguments of wrk, h2load and nghttp that carry the token."""
        return ["-H", f"authorization: Bearer {self.token}"] if self.token else []


def mh(*args: str) -> list[str]:
    return [
        MODELHOST,
        "serve",
        *args,
        "--host",
        "127.0.0.1",
        "--http_port",
        "8080",
        "--grpc_port",
        "8081",
    ]


def iris_loads(protos: str) -> list[Load]:
    return [Load(p, CONNS) for p in protos.split()]


def servers(scenario: str) -> list[Server]:
    mlserver_env = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "8080",
        "MLSERVER_GRPC_PORT": "8081",
        "MLSERVER_METRICS_PORT": "8082",
    }
    kserve_iris = [
        KSERVE_PY,
        str(SHARED / "kserve_sklearn.py"),
        "--model_name",
        "iris",
        "--model_dir",
        str(IRIS),
    ]
    if scenario == "iris":
        return [
            Server("modelhost", mh(str(IRIS), "--name", "iris"), iris_loads("v1 v2 grpc")),
            Server(
                "modelhost-batch",
                mh(str(IRIS), "--name", "iris", "--max_batch_size", "64"),
                iris_loads("v1 v2 grpc"),
            ),
            # Opt-in: sync predict runs on the event loop once it has proven fast (< 1 ms).
            Server(
                "modelhost-inline",
                mh(str(IRIS), "--name", "iris", "--inline_below_ms", "1"),
                iris_loads("v1 v2 grpc"),
            ),
            Server(
                "modelhost-batch-inline",
                mh(str(IRIS), "--name", "iris", "--max_batch_size", "64", "--inline_below_ms", "1"),
                iris_loads("v1 v2 grpc"),
            ),
            # The estimator's own predict, not its distilled form (docs/models.md): what the
            # distilled form is worth in this run.
            Server(
                "modelhost-estimator",
                mh(str(IRIS), "--name", "iris", "--option", "distil=false"),
                iris_loads("v1 v2"),
            ),
            Server(
                "modelhost-batch-estimator",
                mh(
                    str(IRIS),
                    "--name",
                    "iris",
                    "--max_batch_size",
                    "64",
                    "--option",
                    "distil=false",
                ),
                iris_loads("v1 v2"),
            ),
            Server("kserve", kserve_iris, iris_loads("v1 v2 grpc")),
            Server(
                "mlserver",
                [str(PEERS / "mlserver/bin/mlserver"), "start", str(IRIS)],
                iris_loads("v2 grpc"),
                env=mlserver_env,
            ),
            Server(
                "mlserver-tuned",
                [str(PEERS / "mlserver-ht/bin/mlserver"), "start", str(IRIS)],
                iris_loads("v2 grpc"),
                env={**mlserver_env, "MLSERVER_PARALLEL_WORKERS": "0", "MLSERVER_DEBUG": "false"},
            ),
            Server(
                "uvicorn-min",
                [
                    str(PEERS / "asgi/bin/uvicorn"),
                    "asgi_min:app",
                    "--app-dir",
                    str(SHARED),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "8080",
                    "--http",
                    "httptools",
                    "--loop",
                    "uvloop",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                iris_loads("v1 v2"),
                ready=f"{HTTP}/",
            ),
            Server(
                "grpc-min",
                [KSERVE_PY, str(SHARED / "grpc_min.py"), "8081"],
                iris_loads("grpc"),
                ready="grpc",
            ),
        ]
    if scenario == "tensor":
        tensor = [Load("tensor-json", [1, 8]), Load("tensor-bin", [1, 8])]
        return [
            Server(
                "modelhost",
                mh(
                    MODELS,
                    "--model-class",
                    "bench_models:TensorMean",
                    "--name",
                    "tensor",
                    "--max_request_bytes",
                    str(64 << 20),
                ),
                tensor,
                ready=f"{HTTP}/v2/models/tensor/ready",
                model="tensor",
            ),
            Server(
                "kserve",
                [
                    KSERVE_PY,
                    f"{MODELS}/bench_models.py",
                    "--model_name",
                    "tensor",
                    "--kind",
                    "tensor",
                    "--configure_logging",
                    "false",
                    "--enable_latency_logging",
                    "false",
                ],
                tensor,
                ready=f"{HTTP}/v2/models/tensor/ready",
                model="tensor",
            ),
        ]
    if scenario == "mlp":
        mlp = [Load("mlp", CONNS)]
        return [
            Server(
                "modelhost",
                mh(MODELS, "--model-class", "bench_models:MLP", "--name", "mlp"),
                mlp,
                ready=f"{HTTP}/v2/models/mlp/ready",
                model="mlp",
            ),
            Server(
                "modelhost-batch",
                mh(
                    MODELS,
                    "--model-class",
                    "bench_models:MLP",
                    "--name",
                    "mlp",
                    "--max_batch_size",
                    "64",
                ),
                mlp,
                ready=f"{HTTP}/v2/models/mlp/ready",
                model="mlp",
            ),
            Server(
                "kserve",
                [
                    KSERVE_PY,
                    f"{MODELS}/bench_models.py",
                    "--model_name",
                    "mlp",
                    "--kind",
                    "mlp",
                    "--configure_logging",
                    "false",
                    "--enable_latency_logging",
                    "false",
                ],
                mlp,
                ready=f"{HTTP}/v2/models/mlp/ready",
                model="mlp",
            ),
        ]
    if scenario == "gateway":
        # The same model server, direct and behind the embedded platform's gateway (the
        # platform and its replica share core 0, as the direct server has it alone).
        home = PEERS / "run" / "platform-home"
        shutil.rmtree(home, ignore_errors=True)
        isvc = PEERS / "run" / "iris-isvc.yaml"
        isvc.parent.mkdir(parents=True, exist_ok=True)
        isvc.write_text(GATEWAY_ISVC.format(storage=IRIS))
        return [
            Server("modelhost", mh(str(IRIS), "--name", "iris"), iris_loads("v1 v2 grpc")),
            Server(
                "modelhost-gateway",
                [
                    MODELHOST,
                    "up",
                    "--home",
                    str(home),
                    "--port",
                    "8080",
                    "--grpc-port",
                    "8081",
                ],
                iris_loads("v1 v2 grpc"),
                apply=str(isvc),
            ),
        ]
    if scenario == "access":
        # Tokens and TLS against the same iris server without them (bench/access_scenario.py).
        material = access_scenario.prepare(PEERS / "run" / "access", MODELHOST)
        return [
            Server(
                variant.name,
                mh(str(IRIS), "--name", "iris", *access_scenario.serve_flags(variant, material)),
                [Load(p, access_scenario.CONNS) for p in variant.protos.split()],
                ready=f"{access_scenario.scheme(variant)}://127.0.0.1:8080/v2/models/iris/ready",
                scheme=access_scenario.scheme(variant),
                token=material.token if variant.tokens else "",
            )
            for variant in access_scenario.VARIANTS
        ]
    raise SystemExit(f"unknown scenario {scenario!r}: iris, tensor, mlp, gateway or access")


GATEWAY_ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: {storage}
"""


# -- running one server ------------------------------------------------------------------

# The access scenario's certificate is self-signed: like wrk and h2load, the checks take it.
TLS_CLIENT = ssl.create_default_context()
TLS_CLIENT.check_hostname = False
TLS_CLIENT.verify_mode = ssl.CERT_NONE


def apply_when_up(path: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before it listened")
        try:
            with urllib.request.urlopen(f"{HTTP}/healthz", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    # The control API is not on the gateway's port: it is the platform home's Unix socket.
    socket_path = PEERS / "run" / "platform-home" / "api.sock"
    subprocess.run(
        [MODELHOST, "apply", "-f", path, "--server", f"unix:{socket_path}", "--wait"],
        check=True,
        timeout=120,
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_ready(server: Server, process: subprocess.Popen[bytes], timeout: float = 90) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start")
        try:
            if server.ready == "grpc":
                if port_open(8081) and grpc_answer():
                    return time.perf_counter() - started
            else:
                # A model's readiness is not a health probe: with --auth tokens it needs one.
                headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
                probe = urllib.request.Request(server.ready, headers=headers)
                with urllib.request.urlopen(probe, timeout=1, context=TLS_CLIENT) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} not ready after {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    pids = benchlib.tree(process.pid)
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    for _ in range(100):
        if not (port_open(8080) or port_open(8081)):
            return
        time.sleep(0.1)


# The gRPC ModelInfer request both nghttp (checks) and h2load (load) send.
GRPC_REQUEST = [
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    "-d",
    str(PEERS / "infer_body.bin"),
]


def grpc_answer(url: str = GRPC_URL, bearer: list[str] | None = None) -> bytes:
    """The ModelInfer answer's body (empty when refused: a gRPC error has only trailers)."""
    run = subprocess.run(
        [
            "nghttp",
            "-H",
            ":method: POST",
            *GRPC_REQUEST,
            *(bearer or []),
            url,
        ],
        capture_output=True,
        timeout=10,
    )
    return run.stdout if run.returncode == 0 else b""


# -- one load ----------------------------------------------------------------------------


def request_of(proto: str, model: str, http: str = HTTP) -> tuple[str, dict[str, str]]:
    """The URL and the environment of the wrk Lua script for a REST load."""
    if proto == "v1":
        return f"{http}/v1/models/{model}:predict", {"LUA": str(SHARED / "v1.lua")}
    if proto == "v2":
        return f"{http}/v2/models/{model}/infer", {"LUA": str(SHARED / "v2.lua")}
    lua = str(HERE / "lua" / "body.lua")
    if proto == "tensor-json":
        return f"{http}/v2/models/{model}/infer", {
            "LUA": lua,
            "BODY_FILE": str(BODIES / "tensor.json"),
        }
    if proto == "tensor-bin":
        header = (BODIES / "tensor.bin.header").read_text().strip()
        return f"{http}/v2/models/{model}/infer", {
            "LUA": lua,
            "BODY_FILE": str(BODIES / "tensor.bin"),
            "BODY_HEADER": header,
        }
    if proto == "mlp":
        return f"{http}/v2/models/{model}/infer", {
            "LUA": lua,
            "BODY_FILE": str(BODIES / "mlp.json"),
        }
    raise ValueError(proto)


def verify(server: Server, proto: str) -> bool:
    """One request answered with the expected content (checked before and after load).

    With a token, one request without it must be refused first (401 on REST; on gRPC an
    error, which carries no message).
    """
    constant = server.name.endswith("-min")  # the minimal servers answer {"predictions": [1]}
    if proto == "grpc":
        if server.token and grpc_answer(server.grpc_url):
            return False
        return len(grpc_answer(server.grpc_url, server.bearer())) > 5
    url, env = request_of(proto, server.model, server.http)
    if "BODY_FILE" in env:
        body = Path(env["BODY_FILE"]).read_bytes()
        headers = {"Content-Type": "application/json"}
        if env.get("BODY_HEADER"):
            headers = {
                "Inference-Header-Content-Length": env["BODY_HEADER"],
                "Content-Type": "application/octet-stream",
            }
    else:
        text = Path(env["LUA"]).read_text()
        body = text.split("wrk.body = '", 1)[1].rsplit("'", 1)[0].encode()
        headers = {"Content-Type": "application/json"}
    if server.token:
        if not refused(urllib.request.Request(url, data=body, headers=headers, method="POST")):
            return False
        headers["Authorization"] = f"Bearer {server.token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30, context=TLS_CLIENT) as response:
        answer = json.loads(response.read())
    if proto == "v1" or constant:
        return answer.get("predictions") == [1]
    outputs = answer.get("outputs") or []
    if proto == "v2":
        return len(outputs) == 1 and outputs[0].get("data") == [1]
    return bool(outputs) and len(outputs[0].get("data") or []) >= 1


def refused(request: urllib.request.Request) -> bool:
    """Whether the server answers the request (sent without a token) 401."""
    try:
        with urllib.request.urlopen(request, timeout=30, context=TLS_CLIENT):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401


def measure(server: Server, pid: int, proto: str, conns: int, raw: Path) -> dict[str, object]:
    if proto == "grpc":
        url = server.grpc_url
        good = len(grpc_answer(url, server.bearer()))
        base = [
            "taskset",
            "-c",
            LOAD_CPU,
            "h2load",
            "-t1",
            f"-c{conns}",
            "-m1",
            *GRPC_REQUEST,
            *server.bearer(),
        ]
        subprocess.run([*base, "-D", str(WARM), url], capture_output=True)
        before = benchlib.snap(pid)
        log = raw.with_suffix(".log")
        out = subprocess.run(
            [*base, "-D", str(DUR), f"--log-file={log}", url], capture_output=True, text=True
        ).stdout
        after = benchlib.snap(pid)
        raw.write_text(out)
        rps, p50, p99, n, non2, err, ok = benchlib.h2(str(raw), str(log), good).split()
        log.unlink()
    else:
        url, env = request_of(proto, server.model, server.http)
        base = [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{conns}",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            env["LUA"],
            *server.bearer(),
        ]
        run_env = {**os.environ, **env}
        subprocess.run([*base, f"-d{WARM}s", url], capture_output=True, env=run_env)
        before = benchlib.snap(pid)
        out = subprocess.run(
            [*base, f"-d{DUR}s", url], capture_output=True, text=True, env=run_env
        ).stdout
        after = benchlib.snap(pid)
        raw.write_text(out)
        rps, p50, p99, n, non2, err = benchlib.wrk(str(raw)).split()
        ok = "-"
    cpu, busy, steal = benchlib.delta(before, after, n).split()
    return {
        "rps": float(rps),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "requests": int(n),
        "non2xx": int(non2),
        "errors": int(err),
        "payload_ok": ok,
        "cpu_us_per_req": float(cpu),
        "core0_busy_pct": float(busy),
        "steal_pct": float(steal),
    }


# -- the run -----------------------------------------------------------------------------


def run_server(server: Server, scenario: str, run: int, out: Path) -> tuple[dict, list[dict]]:
    log = (out / "logs" / f"{scenario}-{server.name}-p{run}.log").open("wb")
    workdir = PEERS / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server.env, "PYTHONPATH": MODELS}
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *server.cmd],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rows: list[dict] = []
    info: dict[str, object] = {"pass": run, "scenario": scenario, "server": server.name}
    try:
        if server.apply:
            apply_when_up(server.apply, process)
        info["startup_s"] = round(wait_ready(server, process), 2)
        time.sleep(3)
        info["idle_rss_mib"] = round(benchlib.rss(process.pid) / 1024)
        info["processes"] = len(benchlib.tree(process.pid))
        for load in server.loads:
            if not verify(server, load.proto):
                print(f"  VERIFY FAILED {server.name} {load.proto}", flush=True)
                continue
            for conns in load.conns:
                raw = out / "raw" / f"{scenario}-{server.name}-p{run}-{load.proto}-c{conns}.txt"
                row = {
                    "pass": run,
                    "scenario": scenario,
                    "server": server.name,
                    "proto": load.proto,
                    "conns": conns,
                }
                row.update(measure(server, process.pid, load.proto, conns, raw))
                rows.append(row)
                print(
                    f"  {server.name} {load.proto} c={conns}: {row['rps']:.0f} req/s "
                    f"p50={row['p50_ms']}ms p99={row['p99_ms']}ms "
                    f"cpu/req={row['cpu_us_per_req']}us "
                    f"non2xx={row['non2xx']} err={row['errors']}",
                    flush=True,
                )
            if not verify(server, load.proto):
                print(f"  POST-LOAD VERIFY FAILED {server.name} {load.proto}", flush=True)
        info["loaded_rss_mib"] = round(benchlib.rss(process.pid) / 1024)
    except Exception as exc:  # one server failing must not lose the others' results
        print(f"  {server.name} FAILED: {exc}", flush=True)
        info["error"] = str(exc)
    finally:
        stop(process)
        log.close()
    return info, rows


def main() -> None:
    # "access" runs when named (bench/README.md), so a plain run keeps its ~15 minutes.
    scenarios = sys.argv[1:] or ["iris", "tensor", "mlp", "gateway"]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(os.environ.get("OUT", HERE / "results" / stamp))
    (out / "raw").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    for needed in ("wrk", "h2load", "nghttp", "taskset"):
        if shutil.which(needed) is None:
            raise SystemExit(f"{needed} is missing: run bench/setup.sh first")
    if port_open(8080) or port_open(8081):
        raise SystemExit("ports 8080/8081 are busy")
    # Every modelhost server of the run starts as a server does after a model file's first
    # start: from the fast-start cache, primed here (docs/models.md).
    os.environ["MODELHOST_FAST_START_DIR"] = str(out / "fast-start")
    prime_fast_start(IRIS, out / "fast-start", str(Path(MODELHOST).parent / "python"))
    all_rows, all_servers = [], []
    for run in range(1, PASSES + 1):
        for scenario in scenarios:
            for server in servers(scenario):
                print(f"== pass {run} {scenario}: {server.name}", flush=True)
                info, rows = run_server(server, scenario, run, out)
                all_servers.append(info)
                all_rows.extend(rows)
    write_csv(out / "results.csv", all_rows)
    write_csv(out / "servers.csv", all_servers)
    (out / "env.txt").write_text(environment())
    import report  # bench/report.py (bench/ is on sys.path)

    (out / "results.md").write_text(report.render(all_rows, all_servers, environment()))
    print(f"results in {out}")


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)


def environment() -> str:
    def version(cmd: list[str]) -> str:
        try:
            return (
                subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
            )
        except (OSError, IndexError):
            return "?"

    pins = {}
    for venv in ("modelhost", "kserve", "mlserver-ht", "asgi"):
        pip = PEERS / venv / "bin" / "pip"
        freeze = subprocess.run([str(pip), "freeze"], capture_output=True, text=True).stdout
        keep = (
            "kserve==",
            "mlserver==",
            "scikit-learn==",
            "numpy==",
            "uvicorn==",
            "grpcio==",
            "torch==",
            "httptools==",
            "uvloop==",
            "orjson==",
            "msgspec==",
            "protobuf==",
        )
        pins[venv] = " ".join(line for line in freeze.splitlines() if line.startswith(keep))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    lines = [
        f"date_utc: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        f"cpu: {cpu} x {os.cpu_count()}",
        f"kernel: {os.uname().release}",
        f"wrk: {version(['wrk', '-v'])}",
        f"h2load: {version(['h2load', '--version'])}",
        f"config: DUR={DUR} WARM={WARM} PASSES={PASSES} CONNS={CONNS} server_cpu={SERVER_CPU} "
        f"load_cpu={LOAD_CPU}",
        *(f"venv {k}: {v}" for k, v in pins.items()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
