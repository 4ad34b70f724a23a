"""What trust costs: payload logging into the built-in store, and a metric over 100,000 rows.

1. **Logging overhead.** The embedded platform (pinned with its replicas to core 0) serves two
   iris InferenceServices from one model: ``iris-plain`` and ``iris-logged``, the second with
   KServe's ``logger: {mode: all, url: modelhost://trust}`` (the built-in inference data
   store). wrk (core 1) posts the same v2 REST request to each at each connection count, in
   ``WINDOWS`` short windows alternated ABBA (this host's speed drifts by tens of percent
   over a minute; neighbouring windows share it). Target: logged throughput ≥ 90% of plain
   (logging costs ≤ 10%). After the loads, ``/info`` says how many rows were stored, against
   the 2xx answers wrk counted. ``AA=1`` runs the same with neither service logging: the
   method's own spread.
2. **A metric over 100,000 rows.** A store (SQLite file) gets 100,000 credit-style rows; SPD,
   DIR, mean-shift and KS drift are computed over all of them (``batchSize`` 100,000),
   five times each; the median is reported. Target: a fairness metric in ≤ 1 s.

    .venv/bin/python bench/trust_scenario.py   # DUR=10 WARM=3 CONNS="1 8" PASSES=1 WINDOWS=8

Results go to ``OUT/trust.md`` (default ``bench/results/<UTC time>-trust``). Needs wrk and
taskset for part 1 (``PARTS="metrics"`` runs part 2 only).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_scenario import (
    iris_model,
    iris_service,
    parse,
    platform_up,
    publish,
    results_folder,
    wrk,
)

DUR = int(os.environ.get("DUR", "10"))
WARM = int(os.environ.get("WARM", "3"))
PASSES = int(os.environ.get("PASSES", "1"))
CONNS = [int(c) for c in os.environ.get("CONNS", "1 8").split()]
PARTS = os.environ.get("PARTS", "logging metrics").split()
# Windows a side gets per connection count and pass (alternated ABBA), and the A/A control.
WINDOWS = int(os.environ.get("WINDOWS", "8"))
AA = os.environ.get("AA", "") == "1"
BODY = json.dumps(
    {
        "inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [6.8, 2.8, 4.8, 1.4]}
        ]
    }
).encode()
ROWS = 100_000


def logging_overhead(work: Path) -> list[str]:
    model = iris_model(work / "iris")
    objects = work / "objects.yaml"
    # AA=1: the second service logs nothing either (the method's noise floor, same loads).
    logger = [] if AA else ['logger: {mode: all, url: "modelhost://trust"}']
    services = [iris_service("iris-plain", model), iris_service("iris-logged", model, *logger)]
    objects.write_text("---".join(services))
    body = work / "body.json"
    body.write_bytes(BODY)
    lines = [
        f"Each figure: {WINDOWS} windows of {DUR} s a pass, the two services in ABBA order "
        "(plain, logged, logged, plain, ...), after a warm-up of each; req/s is a side's "
        "requests over its windows' time, p99 the median of its windows', and the last "
        "column the spread of the ratios of neighbouring windows."
        + (" **A/A**: the second service logs nothing either." if AA else ""),
        "",
        "| conns | pass | plain req/s | logged req/s | logged / plain | plain p99 ms | "
        "logged p99 ms | window pairs |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    ratios: dict[int, list[float]] = {c: [] for c in CONNS}
    answered = 0.0
    stored = 0
    drains: list[float] = []
    order = [("plain", "logged", "logged", "plain")[i % 4] for i in range(WINDOWS)]
    for pass_number in range(1, PASSES + 1):
        with platform_up(work / f"home-{pass_number}", objects) as port:
            for conns in CONNS:
                windows: dict[str, list[dict[str, float]]] = {"plain": [], "logged": []}
                for name in ("plain", "logged"):
                    warm = parse(wrk(port, f"/v2/models/iris-{name}/infer", "", conns, WARM, body))
                    if name == "logged":  # every answered request is a row, warm-up ones too
                        answered += warm["requests"] - warm["non2xx"]
                for name in order:
                    path = f"/v2/models/iris-{name}/infer"
                    measured = parse(wrk(port, path, "", conns, DUR, body))
                    if name == "logged":
                        answered += measured["requests"] - measured["non2xx"]
                    windows[name].append(measured)
                    print(f"pass {pass_number} c={conns} {name}: {measured}", flush=True)
                rate = {
                    name: sum(w["rps"] for w in runs) / len(runs) for name, runs in windows.items()
                }
                ratio = rate["logged"] / rate["plain"]
                ratios[conns].append(ratio)
                pairs = [
                    logged["rps"] / plain["rps"]
                    for plain, logged in zip(windows["plain"], windows["logged"], strict=True)
                ]
                p99 = {
                    name: statistics.median(w["p99_ms"] for w in runs)
                    for name, runs in windows.items()
                }
                lines.append(
                    f"| {conns} | {pass_number} | {rate['plain']:,.0f} | "
                    f"{rate['logged']:,.0f} | {ratio:.1%} | {p99['plain']:.2f} | "
                    f"{p99['logged']:.2f} | {min(pairs):.0%}-{max(pairs):.0%} |"
                )
            if not AA:
                # The store's writer runs when serving leaves time: its rows may still come.
                rows, waited = stored_rows(port, answered - stored)
                stored += rows
                drains.append(waited)
    lines.append("")
    for conns, values in ratios.items():
        median = statistics.median(values)
        verdict = "met" if median >= 0.90 else "not met"
        lines.append(f"- c={conns}: logged/plain median {median:.1%} (target ≥ 90%): {verdict}")
    if not AA:
        lines.append(
            f"- rows stored: {stored:,} for {answered:,.0f} logged 2xx answers (wrk counts "
            "the requests it completed; one it cut off at the end may be answered and stored "
            "too)"
        )
        lines.append(
            "- after the last load of a pass, the store had every row within "
            + ", ".join(f"{s:.1f}" for s in drains)
            + " s (one figure a pass)"
        )
    return lines


def stored_rows(port: int, expected: float, limit_s: float = 60.0) -> tuple[int, float]:
    """The logged service's rows once they reach ``expected`` or stop growing for 3 s (or
    ``limit_s`` passes); and how long that took."""
    started = time.monotonic()
    last, last_change = -1, started
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as answer:
            info = json.loads(answer.read())
        rows = int(info.get("iris-logged", {}).get("data", {}).get("observations", 0))
        now = time.monotonic()
        if rows != last:
            last, last_change = rows, now
        if rows >= expected or now - last_change >= 3.0 or now - started >= limit_s:
            return rows, now - started
        time.sleep(0.1)


def metric_timings(work: Path) -> list[str]:
    import numpy as np

    from modelhost.trust.drift import evaluate_drift, parse_drift_request
    from modelhost.trust.fairness import evaluate_fairness, parse_fairness_request
    from modelhost.trust.store import InferenceBatch, TrustStore

    store = TrustStore(str(work / "trust.sqlite"))
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    for chunk in range(10):
        n = ROWS // 10
        gender = rng.integers(0, 2, n).astype(float)
        store.write(
            [
                InferenceBatch(
                    "credit",
                    {
                        "age": rng.integers(18, 80, n).astype(float).tolist(),
                        "gender": gender.tolist(),
                        "income": rng.normal(50_000, 15_000, n).round(2).tolist(),
                    },
                    {"approved": (rng.random(n) < 0.5 + 0.1 * gender).astype(int).tolist()},
                    [f"r{chunk}-{i}" for i in range(n)],
                    tag="TRAINING" if chunk == 0 else "_trustyai_unlabeled",
                )
            ]
        )
    load_s = time.perf_counter() - started
    fairness: dict[str, Any] = {
        "modelId": "credit",
        "protectedAttribute": "gender",
        "privilegedAttribute": 1.0,
        "unprivilegedAttribute": 0.0,
        "outcomeName": "approved",
        "favorableOutcome": 1,
        "batchSize": ROWS,
    }
    drift = {"modelId": "credit", "referenceTag": "TRAINING", "batchSize": ROWS}
    runs = {
        "spd": lambda: evaluate_fairness(store, "spd", parse_fairness_request(fairness)),
        "dir": lambda: evaluate_fairness(store, "dir", parse_fairness_request(fairness)),
        "meanshift": lambda: evaluate_drift(store, "meanshift", parse_drift_request(drift)),
        "kstest": lambda: evaluate_drift(store, "kstest", parse_drift_request(drift)),
    }
    lines = [
        f"Store of {ROWS:,} rows written in {load_s:.2f} s (10 transactions).",
        "",
        "| metric | rows | median of 5 (s) | target |",
        "|---|---:|---:|---|",
    ]
    for name, run in runs.items():
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        median = statistics.median(timings)
        target = (
            ("≤ 1 s: " + ("met" if median <= 1.0 else "not met")) if name in ("spd", "dir") else "-"
        )
        lines.append(f"| {name} | {ROWS:,} | {median:.3f} | {target} |")
        print(f"{name}: {timings}", flush=True)
    store.close()
    return lines


def main() -> int:
    out_dir = results_folder("trust")
    work = Path(tempfile.mkdtemp(prefix="trust-bench-"))
    sections = []
    if "logging" in PARTS:
        sections.append("## Payload logging into the built-in store (iris, v2 REST)\n")
        sections += logging_overhead(work)
        sections.append("")
    if "metrics" in PARTS:
        sections.append("## Metrics over 100,000 stored rows\n")
        sections += metric_timings(work)
    publish(out_dir, "trust.md", "\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
