"""A bystander's ModelInfer latency and the server's memory while one attacker floods HTTP/2.

Issue 14's bar: under each flood of its item 1 (PING, SETTINGS, rapid reset, and the same
without ever reading), a second client's ModelInfer p99 stays under 100 ms and the server's
RSS under 2x its idle RSS. This starts ``modelhost serve`` (iris) pinned to core 0, an
attacker process on core 1 that floods and reconnects whenever the server ends its
connection, and a bystander on core 1 that calls ModelInfer one call after another with
tritonclient's gRPC client. Each phase lasts ``SECONDS``; a quiet phase comes first as the
reference. Run by hand:

    .venv/bin/python bench/h2_flood.py [OUT]        # ~1 minute; writes OUT/h2_flood.md
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import hpack
import numpy as np
import tritonclient.grpc as triton
from h2_adapter import free_port, iris_model

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("SECONDS_PER_PHASE", "6"))
FLOODS = ["quiet", "ping", "settings", "rapid-reset", "ping-no-read", "headers-no-read"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return struct.pack(">HBBBL", size >> 8, size & 0xFF, kind, flags, stream) + payload


def _rss_kib(pid: int) -> int:
    total = 0
    for child in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(each) for each in text.split()]


def _sample(pid: int, done: threading.Event, peak: list[int]) -> None:
    while not done.wait(0.1):
        peak[0] = max(peak[0], _rss_kib(pid))


def _flood_bytes(kind: str, burst: int = 0) -> bytes:
    """One burst of the flood: what the attacker writes, again and again, on one connection
    (``burst``: how many came before on it, so that stream ids keep going up)."""
    if kind in ("ping", "ping-no-read"):
        return b"".join(frame(6, 0, 0, struct.pack(">Q", i)) for i in range(2000))
    if kind == "settings":
        return frame(4, 0, 0) * 2000
    encoder = hpack.Encoder()
    block = encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/inference.GRPCInferenceService/ModelInfer"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    out = []
    for i in range(500):
        stream = 1 + 2 * (500 * burst + i)
        out.append(frame(1, 4, stream, block))
        if kind == "rapid-reset":
            out.append(frame(0, 0, stream, b"\0\0\0\0\x05"))
            out.append(frame(3, 0, stream, struct.pack(">L", 8)))
    return b"".join(out)


def attacker(kind: str, port: int, stop: multiprocessing.synchronize.Event) -> None:
    os.sched_setaffinity(0, {1})
    fixed = kind in ("ping", "ping-no-read", "settings")
    burst = _flood_bytes(kind)
    read = not kind.endswith("no-read")
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(PREFACE + frame(4, 0, 0))
                count = 0
                while not stop.is_set():
                    sock.sendall(burst if fixed else _flood_bytes(kind, count))
                    count += 1
                    if read:
                        sock.setblocking(False)
                        try:
                            while sock.recv(1 << 16):
                                pass
                        except BlockingIOError:
                            pass
                        sock.setblocking(True)
        except OSError:
            continue  # the server ended the connection: come back, as a flood does


def bystander(port: int, seconds: float) -> list[float]:
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = triton.InferInput("input-0", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.array([[6.8, 2.8, 4.8, 1.4]]))
    latencies, failures = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            client.infer("iris", [tensor], client_timeout=5)
            latencies.append((time.perf_counter() - started) * 1000)
        except Exception:
            failures += 1
    client.close()
    if failures:
        latencies.append(float("inf"))
    return latencies


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "bench" / "results" / "h2_flood")
    out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        model = iris_model(Path(tmp))
        http_port, grpc_port = free_port(), free_port()
        log = (out / "server.log").open("w")
        server = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                sys.executable,
                "-m",
                "modelhost",
                "serve",
                str(model),
                "--name",
                "iris",
                "--http_port",
                str(http_port),
                "--grpc_port",
                str(grpc_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            for _ in range(300):
                try:
                    triton.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready("iris")
                    break
                except Exception:
                    time.sleep(0.1)
            bystander(grpc_port, 2)  # warm-up
            idle = _rss_kib(server.pid)
            rows = []
            for kind in FLOODS:
                stop = multiprocessing.Event()
                attack = None
                if kind != "quiet":
                    attack = multiprocessing.Process(target=attacker, args=(kind, grpc_port, stop))
                    attack.start()
                    time.sleep(0.5)
                peak = [idle]
                sampling = threading.Event()
                sampler = threading.Thread(target=_sample, args=(server.pid, sampling, peak))
                sampler.start()
                latencies = bystander(grpc_port, SECONDS)
                sampling.set()
                sampler.join()
                stop.set()
                if attack is not None:
                    attack.join(5)
                    if attack.is_alive():
                        attack.kill()
                ok = [x for x in latencies if x != float("inf")]
                p50 = statistics.median(ok) if ok else float("nan")
                p99 = sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)]
                rows.append((kind, len(ok), len(latencies) - len(ok), p50, p99, peak[0] / idle))
                print(rows[-1], flush=True)
                time.sleep(1)
        finally:
            server.terminate()
            server.wait(10)
            log.close()
    lines = [
        "| flood | bystander calls | failed | p50 ms | p99 ms | server RSS / idle |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, calls, failed, p50, p99, rss in rows:
        lines.append(f"| {kind} | {calls} | {failed} | {p50:.2f} | {p99:.2f} | {rss:.2f} |")
    text = "\n".join(lines) + f"\n\nidle RSS {idle / 1024:.0f} MiB, {SECONDS:.0f} s per phase\n"
    (out / "h2_flood.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
