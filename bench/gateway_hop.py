"""The gateway hop with the two sides interleaved: direct and through the platform, ABBA.

``python3 bench/run.py gateway`` measures the direct server's loads, then the platform's:
on this host, whose speed moves 20-30% within minutes, the ratio of two figures taken
minutes apart moved as much (bench/RESULTS.md, runs 17-19). Here both run at once on core
0 (a ``modelhost serve`` of iris on ports 8090/8091 and ``modelhost up`` with the same
model as an InferenceService on 8080/8081; the idle one costs nothing), and each load
alternates short windows between them (direct, gateway, gateway, direct, ...), so that a
drift of the host falls on both sides alike. ``AA=1`` makes both sides the direct server:
what the method reads when there is no difference.

    python3 bench/run.py gateway   # first, once: installs the peers' folder (PEERS)
    PASSES=2 WINDOWS=6 DUR=2 python3 bench/gateway_hop.py     # ~6 minutes

Writes ``bench/results/<time>-hop/results.md``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import graph_scenario as scenario
import run as harness

benchlib = harness.benchlib
WINDOWS = int(os.environ.get("WINDOWS", "8"))
DUR = int(os.environ.get("DUR", "3"))
WARM = int(os.environ.get("WARM", "2"))
PASSES = int(os.environ.get("PASSES", "2"))
CONNS = [int(c) for c in os.environ.get("CONNS", "8 64").split()]
PROTOS = os.environ.get("PROTOS", "v1 v2 grpc").split()
AA = os.environ.get("AA", "") not in ("", "0")
# More options for `modelhost up` (e.g. --no-batch-scheduling, to compare).
UP_OPTIONS = os.environ.get("UP_OPTIONS", "").split()
# More options for the model server on both sides, the direct one and the platform's
# replica (its InferenceService's args), e.g. --no-distil: the replica that run 7 measured.
SERVE_OPTIONS = os.environ.get("SERVE_OPTIONS", "").split()
DIRECT_HTTP, DIRECT_GRPC = 8090, 8091


def window(proto: str, conns: int, http_port: int, grpc_port: int, seconds: int) -> tuple:
    """One load of ``seconds``: (requests, seconds, p99 ms), or raises on a failed load."""
    if proto == "grpc":
        url = f"http://127.0.0.1:{grpc_port}{harness.GRPC_PATH}"
        good = len(harness.grpc_answer(url))
        with tempfile.TemporaryDirectory() as tmp:
            raw, log = Path(tmp) / "out", Path(tmp) / "log"
            out = subprocess.run(
                ["taskset", "-c", harness.LOAD_CPU, "h2load", "-t1", f"-c{conns}", "-m1",
                 *harness.GRPC_REQUEST, "-D", str(seconds), f"--log-file={log}", url],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            raw.write_text(out)
            rps, _, p99, n, non2, err, ok = benchlib.h2(str(raw), str(log), good).split(" ", 6)
        if ok != "yes":
            raise RuntimeError(f"gRPC on {grpc_port}: answers not the expected size ({ok})")
    else:
        url, env = harness.request_of(proto, "iris", f"http://127.0.0.1:{http_port}")
        out = subprocess.run(
            ["taskset", "-c", harness.LOAD_CPU, "wrk", "-t1", f"-c{conns}", "--latency",
             "-s", env["LUA"], f"-d{seconds}s", url],
            capture_output=True, text=True, env={**os.environ, **env}, check=True,
        ).stdout  # fmt: skip
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as raw_file:
            raw_file.write(out)
            raw_file.flush()
            rps, _, p99, n, non2, err = benchlib.wrk(raw_file.name).split()
    if int(float(non2)) or int(float(err)) or float(n) == 0:
        raise RuntimeError(f"{proto} c={conns} on {http_port}: {non2} non-2xx, {err} errors")
    return float(n), float(n) / float(rps), float(p99)


def interleaved(proto: str, conns: int, sides: dict[str, tuple[int, int]]) -> dict[str, object]:
    """The load in ABBA windows over the two sides: each side's rate and the spread."""
    for http_port, grpc_port in sides.values():
        window(proto, conns, http_port, grpc_port, WARM)
    names = list(sides)
    got: dict[str, list[tuple]] = {name: [] for name in names}
    for index in range(WINDOWS):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            got[name].append(window(proto, conns, *sides[name], DUR))
    rates = {n: sum(w[0] for w in got[n]) / sum(w[1] for w in got[n]) for n in names}
    a, b = names
    pairs = [got[b][i][0] / got[b][i][1] / (got[a][i][0] / got[a][i][1]) for i in range(WINDOWS)]
    return {
        "rates": rates,
        "ratio": rates[b] / rates[a],
        "pairs": (min(pairs), max(pairs)),
        "p99": {n: statistics.median(w[2] for w in got[n]) for n in names},
    }


def main() -> int:
    out_dir = scenario.results_folder("hop")
    work = Path(tempfile.mkdtemp(prefix="gateway-hop-"))
    isvc = work / "iris.yaml"
    text = harness.GATEWAY_ISVC.format(storage=harness.IRIS)
    if SERVE_OPTIONS:
        text += f"      args: {SERVE_OPTIONS!r}\n"
    isvc.write_text(text)
    direct = subprocess.Popen(
        ["taskset", "-c", harness.SERVER_CPU, harness.MODELHOST, "serve", str(harness.IRIS),
         "--name", "iris", "--http_port", str(DIRECT_HTTP), "--grpc_port", str(DIRECT_GRPC),
         *SERVE_OPTIONS],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    platform = subprocess.Popen(
        ["taskset", "-c", harness.SERVER_CPU, harness.MODELHOST, "up", "--home",
         str(work / "home"), "--port", "8080", "--grpc-port", "8081", *UP_OPTIONS],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    second = "direct, again" if AA else "gateway"
    sides = {"direct": (DIRECT_HTTP, DIRECT_GRPC), second: (8080, 8081)}
    if AA:
        sides[second] = sides["direct"]
    rows = []
    try:
        scenario.wait_http(f"http://127.0.0.1:{DIRECT_HTTP}/v2/models/iris/ready", direct)
        scenario.wait_http("http://127.0.0.1:8080/healthz", platform)
        subprocess.run(
            [harness.MODELHOST, "apply", "-f", str(isvc), "--server",
             f"unix:{work / 'home' / 'api.sock'}", "--wait", "--timeout", "120"],
            check=True, capture_output=True,
        )  # fmt: skip
        for pass_number in range(1, PASSES + 1):
            for proto in PROTOS:
                for conns in CONNS:
                    result = interleaved(proto, conns, sides)
                    rows.append((pass_number, proto, conns, result))
                    print(pass_number, proto, conns, result, flush=True)
    finally:
        scenario.stop_process_group(platform)
        scenario.stop_process_group(direct)
    publish(out_dir, rows, second)
    return 0


def publish(out_dir: Path, rows: list[tuple], second: str) -> None:
    lines = [
        "## The gateway hop, interleaved (`bench/gateway_hop.py`)",
        "",
        f"{WINDOWS} windows of {DUR} s a load and pass, the two sides in ABBA order; req/s is a "
        "side's requests over its windows' time, p99 the median of its windows', the last "
        "column the spread of the ratios of the windows taken side by side."
        + (" **A/A**: both sides are the direct server." if AA else "")
        + (f" `modelhost up {' '.join(UP_OPTIONS)}`." if UP_OPTIONS else "")
        + (f" Both model servers with `{' '.join(SERVE_OPTIONS)}`." if SERVE_OPTIONS else ""),
        "",
        f"| load | conns | pass | direct req/s | {second} req/s | {second} / direct | "
        f"direct p99 ms | {second} p99 ms | window pairs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_load: dict[tuple[str, int], list[float]] = {}
    for pass_number, proto, conns, r in rows:
        rates, p99, (low, high) = r["rates"], r["p99"], r["pairs"]
        lines.append(
            f"| {proto} | {conns} | {pass_number} | {rates['direct']:,.0f} | "
            f"{rates[second]:,.0f} | {r['ratio']:.3f} | {p99['direct']:.2f} | "
            f"{p99[second]:.2f} | {low:.2f}-{high:.2f} |"
        )
        by_load.setdefault((proto, conns), []).append(float(r["ratio"]))
    lines.append("")
    for (proto, conns), ratios in by_load.items():
        lines.append(
            f"- {proto}, {conns} conns: {second} / direct, median of {len(ratios)} passes "
            f"**{statistics.median(ratios):.3f}**"
        )
    scenario.publish(out_dir, "results.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
