"""Markdown tables from one run of bench/run.py: targets first, then every figure.

python3 bench/report.py bench/results/<run>     # re-render results.md from the CSVs
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

# (label, scenario, numerator server, denominator server, proto, conns, metric, goal, kind)
TARGETS = [
    (
        "v2 REST iris, no batching, 8 conns: modelhost / KServe",
        "iris",
        "modelhost",
        "kserve",
        "v2",
        8,
        "rps",
        3.0,
        ">=",
    ),
    (
        "v2 REST iris, no batching, 8 conns: modelhost / MLServer tuned",
        "iris",
        "modelhost",
        "mlserver-tuned",
        "v2",
        8,
        "rps",
        2.0,
        ">=",
    ),
    (
        "(opt-in inline predict) v2 REST iris, no batching, 8 conns: modelhost / KServe",
        "iris",
        "modelhost-inline",
        "kserve",
        "v2",
        8,
        "rps",
        3.0,
        ">=",
    ),
    (
        "v2 REST iris, batching, 64 conns: modelhost / KServe",
        "iris",
        "modelhost-batch",
        "kserve",
        "v2",
        64,
        "rps",
        10.0,
        ">=",
    ),
    (
        "v2 REST iris, batching, 64 conns: p99 modelhost / KServe",
        "iris",
        "modelhost-batch",
        "kserve",
        "v2",
        64,
        "p99_ms",
        0.5,
        "<=",
    ),
    (
        "v2 REST iris, batching, 64 conns: modelhost / minimal uvicorn",
        "iris",
        "modelhost-batch",
        "uvicorn-min",
        "v2",
        64,
        "rps",
        0.5,
        ">=",
    ),
    (
        "v1 REST iris, batching, 64 conns: modelhost / minimal uvicorn",
        "iris",
        "modelhost-batch",
        "uvicorn-min",
        "v1",
        64,
        "rps",
        0.5,
        ">=",
    ),
    (
        "v2 REST iris, batching, 64 conns: modelhost / KServe (round two)",
        "iris",
        "modelhost-batch",
        "kserve",
        "v2",
        64,
        "rps",
        12.0,
        ">=",
    ),
    (
        "gRPC iris, batching, 64 conns: modelhost / minimal grpc.aio",
        "iris",
        "modelhost-batch",
        "grpc-min",
        "grpc",
        64,
        "rps",
        0.85,
        ">=",
    ),
    (
        "(opt-in inline predict) gRPC iris, batching, 64 conns: modelhost / minimal grpc.aio",
        "iris",
        "modelhost-batch-inline",
        "grpc-min",
        "grpc",
        64,
        "rps",
        0.85,
        ">=",
    ),
    (
        "1x3x224x224 FP32, 1 conn: binary / JSON (modelhost)",
        "tensor",
        "modelhost:tensor-bin",
        "modelhost:tensor-json",
        None,
        1,
        "rps",
        10.0,
        ">=",
    ),
    (
        "1x3x224x224 FP32, 8 conns: binary / JSON (modelhost)",
        "tensor",
        "modelhost:tensor-bin",
        "modelhost:tensor-json",
        None,
        8,
        "rps",
        10.0,
        ">=",
    ),
    (
        "1x3x224x224 FP32 binary, 1 conn: modelhost / KServe",
        "tensor",
        "modelhost",
        "kserve",
        "tensor-bin",
        1,
        "rps",
        1.0,
        ">",
    ),
    (
        "1x3x224x224 FP32 binary, 8 conns: modelhost / KServe",
        "tensor",
        "modelhost",
        "kserve",
        "tensor-bin",
        8,
        "rps",
        1.0,
        ">",
    ),
    (
        "gateway hop, v2 REST iris, 8 conns: through the platform's gateway / direct",
        "gateway",
        "modelhost-gateway",
        "modelhost",
        "v2",
        8,
        "rps",
        0.75,
        ">=",
    ),
    (
        "gateway hop, v2 REST iris, 64 conns: through the platform's gateway / direct",
        "gateway",
        "modelhost-gateway",
        "modelhost",
        "v2",
        64,
        "rps",
        0.75,
        ">=",
    ),
    (
        "gateway hop, v1 REST iris, 8 conns: through the platform's gateway / direct",
        "gateway",
        "modelhost-gateway",
        "modelhost",
        "v1",
        8,
        "rps",
        0.75,
        ">=",
    ),
    (
        "gateway hop, v1 REST iris, 64 conns: through the platform's gateway / direct",
        "gateway",
        "modelhost-gateway",
        "modelhost",
        "v1",
        64,
        "rps",
        0.75,
        ">=",
    ),
    (
        "gateway hop, gRPC iris, 8 conns: through the platform's gateway / direct",
        "gateway",
        "modelhost-gateway",
        "modelhost",
        "grpc",
        8,
        "rps",
        0.75,
        ">=",
    ),
    (
        "gateway hop, gRPC iris, 64 conns: through the platform's gateway / direct",
        "gateway",
        "modelhost-gateway",
        "modelhost",
        "grpc",
        64,
        "rps",
        0.75,
        ">=",
    ),
]

# The access scenario: (what is compared, with, without, loads, goal on req/s with / without).
ACCESS_PAIRS = [
    ("bearer tokens / none", "modelhost-tokens", "modelhost", ("v2", "v1", "grpc"), 0.95),
    (
        "bearer tokens / none, batching",
        "modelhost-batch-tokens",
        "modelhost-batch",
        ("v2", "v1"),
        0.95,
    ),
    ("TLS / clear text", "modelhost-tls", "modelhost", ("v2", "grpc"), None),
]
ACCESS_CONNS = (8, 64)
LOAD_NAMES = {"v1": "v1 REST", "v2": "v2 REST", "grpc": "gRPC"}
TARGETS += [
    (
        f"{what}, {LOAD_NAMES[proto]} iris, {conns} conns",
        "access",
        num,
        den,
        proto,
        conns,
        "rps",
        goal,
        ">=",
    )
    for what, num, den, protos, goal in ACCESS_PAIRS
    if goal is not None
    for proto in protos
    for conns in ACCESS_CONNS
]


def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _averaged(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        key = (row["scenario"], row["server"], row["proto"], int(row["conns"]))
        groups[key].append(row)
    return {
        key: {
            m: mean(_num(r[m]) for r in group)
            for m in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")
        }
        | {"passes": len(group), "spread": _spread([_num(r["rps"]) for r in group])}
        for key, group in groups.items()
    }


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / max(mean(values), 1e-9) if len(values) > 1 else 0.0


def _lookup(avg: dict, scenario: str, spec: str, proto: str | None, conns: int) -> dict | None:
    server, _, spec_proto = spec.partition(":")
    return avg.get((scenario, server, spec_proto or proto, conns))


def render(rows: list[dict], servers: list[dict], env: str) -> str:
    avg = _averaged(rows)
    out = [
        "# modelhost benchmark results",
        "",
        "Server pinned to core 0, load generator to core 1, loopback. Figures are the mean "
        "over passes; compare ratios within this run, not absolute rates across runs.",
        "",
        "## Targets",
        "",
        "| target | modelhost | peer | ratio | goal | met |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for label, scenario, num, den, proto, conns, metric, goal, kind in TARGETS:
        a, b = _lookup(avg, scenario, num, proto, conns), _lookup(avg, scenario, den, proto, conns)
        if a is None or b is None:
            out.append(f"| {label} | - | - | - | {kind} {goal} | not measured |")
            continue
        ratio = a[metric] / b[metric] if b[metric] else float("nan")
        met = {">=": ratio >= goal, ">": ratio > goal, "<=": ratio <= goal}[kind]
        unit = " ms" if metric.endswith("_ms") else ""
        out.append(
            f"| {label} | {a[metric]:.0f}{unit} | {b[metric]:.0f}{unit} | {ratio:.2f} | "
            f"{kind} {goal} | {'yes' if met else 'no'} |"
        )
    memory = {(s["scenario"], s["server"]): _num(s.get("idle_rss_mib")) for s in servers}
    mine, theirs = memory.get(("iris", "modelhost")), memory.get(("iris", "kserve"))
    if mine is not None and theirs is not None:
        out.append(
            f"| idle RSS of one worker (iris): modelhost / KServe | {mine:.0f} MiB | "
            f"{theirs:.0f} MiB | {mine / theirs:.2f} | <= 1.0 | "
            f"{'yes' if mine <= theirs else 'no'} |"
        )
    out += _access(avg)
    out += _tails(avg)
    out += [
        "",
        "## Every load",
        "",
        "`vs KServe`: this server's req/s over KServe's on the same load. `vs floor`: over "
        "the minimal server's (uvicorn-min for REST, grpc-min for gRPC).",
        "",
        "| scenario | server | load | conns | req/s | p50 ms | p99 ms | CPU µs/req | vs KServe "
        "| vs floor | passes (spread) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (scenario, server, proto, conns), v in sorted(avg.items()):
        peer = avg.get((scenario, "kserve", proto, conns))
        floor_server = "grpc-min" if proto == "grpc" else "uvicorn-min"
        floor = avg.get((scenario, floor_server, proto, conns))
        vs_kserve = f"{v['rps'] / peer['rps']:.2f}" if peer and server != "kserve" else ""
        vs_floor = (
            f"{100 * v['rps'] / floor['rps']:.0f}%" if floor and server != floor_server else ""
        )
        out.append(
            f"| {scenario} | {server} | {proto} | {conns} | {v['rps']:.0f} | "
            f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['cpu_us_per_req']:.0f} | "
            f"{vs_kserve} | {vs_floor} | {v['passes']:.0f} ({100 * v['spread']:.0f}%) |"
        )
    out += [
        "",
        "## Start-up and memory",
        "",
        "| scenario | server | pass | ready in s | idle RSS MiB | processes | RSS after load MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in servers:
        out.append(
            f"| {s['scenario']} | {s['server']} | {s['pass']} | {s.get('startup_s', '-')} | "
            f"{s.get('idle_rss_mib', '-')} | {s.get('processes', '-')} | "
            f"{s.get('loaded_rss_mib', '-')} |" + (f" failed: {s['error']}" if "error" in s else "")
        )
    out += ["", "## Environment", "", "```", env.rstrip(), "```", ""]
    return "\n".join(out)


TAIL_SERVERS = ("modelhost", "modelhost-batch")
TAIL_CONNS = (8, 64)
TAIL_GOAL = 3.0


def _tails(avg: dict) -> list[str]:
    """p99 over p50 of each REST load at 8 and 64 connections, batched and not (<= 3)."""
    rows = []
    for server in TAIL_SERVERS:
        for proto in ("v2", "v1"):
            for conns in TAIL_CONNS:
                v = avg.get(("iris", server, proto, conns))
                if v is None or not v["p50_ms"]:
                    continue
                ratio = v["p99_ms"] / v["p50_ms"]
                rows.append(
                    f"| {server} | {LOAD_NAMES[proto]} | {conns} | {v['p50_ms']:.2f} | "
                    f"{v['p99_ms']:.2f} | {ratio:.2f} | <= {TAIL_GOAL} | "
                    f"{'yes' if ratio <= TAIL_GOAL else 'no'} |"
                )
    if not rows:
        return []
    return [
        "",
        "### Tails: p99 / p50 on REST",
        "",
        "| server | load | conns | p50 ms | p99 ms | p99 / p50 | goal | met |",
        "|---|---|---:|---:|---:|---:|---:|:-:|",
        *rows,
    ]


def _access(avg: dict) -> list[str]:
    """Tokens and TLS next to the same server without them (only when `access` ran)."""
    if not any(key[0] == "access" for key in avg):
        return []
    out = [
        "",
        "## Access: what bearer tokens and TLS cost",
        "",
        "Each load on the iris server with tokens (every request carries its bearer token) or "
        "TLS, next to the same load on the same server without; ratio: req/s with / without.",
        "",
        "| comparison | load | conns | req/s | without | ratio | goal | p99 ms | without "
        "| CPU µs/req | without |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for what, num, den, protos, goal in ACCESS_PAIRS:
        for proto in protos:
            for conns in ACCESS_CONNS:
                a = avg.get(("access", num, proto, conns))
                b = avg.get(("access", den, proto, conns))
                if a is None or b is None:
                    out.append(f"| {what} | {LOAD_NAMES[proto]} | {conns} | not measured |")
                    continue
                ratio = a["rps"] / b["rps"] if b["rps"] else float("nan")
                out.append(
                    f"| {what} | {LOAD_NAMES[proto]} | {conns} | {a['rps']:.0f} | "
                    f"{b['rps']:.0f} | {ratio:.2f} | {f'>= {goal}' if goal else '-'} | "
                    f"{a['p99_ms']:.2f} | {b['p99_ms']:.2f} | {a['cpu_us_per_req']:.0f} | "
                    f"{b['cpu_us_per_req']:.0f} |"
                )
    return out


def _read(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    run = Path(sys.argv[1])
    text = render(
        _read(run / "results.csv"),
        _read(run / "servers.csv"),
        (run / "env.txt").read_text() if (run / "env.txt").exists() else "",
    )
    (run / "results.md").write_text(text)
    print(text)
