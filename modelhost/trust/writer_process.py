"""The inference data store's writer, run as a process of its own at the lowest CPU priority.

The platform's gateway logs every request of a ``logger``-enabled service into the store.
Decoding a logged exchange and inserting its row costs about as much CPU as relaying the
request (bench/RESULTS.md, runs 11 and 12); done in the gateway, it comes out of the
gateway's serving time. Here it is done by ``python -m modelhost.trust.writer_process``,
which the gateway feeds through a pipe (:class:`~modelhost.trust.process_writer.ProcessWriter`):
on a machine with a spare core it runs beside the gateway; on a busy one it runs in the idle
scheduling class (SCHED_IDLE, and nice 19), after serving, and the rows wait in the pipe
(bounded by the gateway) until there is time.

It reads exchange frames (:mod:`modelhost.trust.exchange_frames`) on stdin, stores what each
read brought in one transaction (:meth:`BatchWriter.store_exchanges`), and answers each round
with one JSON line on stdout: ``{"taken", "written", "refused", "failed", "models"}``. It exits
at the end of its input, or with status 2 on a frame it cannot read.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import select
import sys
import time

import orjson

from modelhost.trust.exchange_frames import FrameReader
from modelhost.trust.store import TrustStore
from modelhost.trust.writer import BatchWriter, Exchange

__all__ = ["main"]

logger = logging.getLogger("modelhost.trust")

# The pipe from the gateway is widened to this (Linux's default unprivileged maximum): a
# round's window (below) of logged exchanges fits in it, so the gateway's writes seldom find
# it full and wait in its loop for room. One read takes at most this much, into one buffer
# kept for every read (a fresh 1 MiB bytes object per read cost ~8 page faults here).
_READ_BYTES = 1 << 20
# How long a round waits, from its first bytes, for more to store with them.
_ROUND_S = 0.05
# A round takes what is waiting, up to this many exchanges (one transaction each round).
_ROUND_EXCHANGES = 4096
# A round gives up the CPU after each slice of this many exchanges decoded (~0.3 ms): a
# request that wakes the gateway on the same core mid-round runs then, instead of waiting
# for the kernel to preempt this idle-class process at its next tick (measured: the logged
# p99 at one connection was ~1.9 ms against ~0.8 ms plain, rounds of ~1 ms of CPU).
_SLICE = 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelhost.trust.writer_process")
    parser.add_argument("--store", required=True, help="the store's SQLite file")
    parser.add_argument("--nice", type=int, default=19, help="added to the process's niceness")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if args.nice:
        _lower_priority(args.nice)
    store = TrustStore(args.store)
    writer = BatchWriter(store, lambda models: None)
    frames = FrameReader()
    answers = sys.stdout.buffer
    _widen_pipe(0)
    buffer = bytearray(_READ_BYTES)
    view = memoryview(buffer)
    try:
        while True:
            size = os.readv(0, [buffer])
            if not size:
                break
            # The round's window: what else arrives in it is stored in the same transaction
            # (a round per read would cost a commit and an answer per exchange or two).
            time.sleep(_ROUND_S)
            try:
                exchanges = frames.feed(view[:size])
                while len(exchanges) < _ROUND_EXCHANGES and _waiting(0):
                    size = os.readv(0, [buffer])
                    if not size:
                        break
                    exchanges += frames.feed(view[:size])
            except ValueError as exc:
                logger.error("trust writer: the gateway's frames are corrupt: %s", exc)
                return 2
            if exchanges:
                answers.write(orjson.dumps(_store(writer, exchanges)) + b"\n")
                answers.flush()
    finally:
        store.close()
    return 0


def _lower_priority(nice: int) -> None:
    """Run after everything else: Linux's idle scheduling class where there is one (the
    process gets the CPU only when no other wants it), and a higher niceness either way."""
    try:
        os.nice(nice)
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:  # pragma: no cover - a system that refuses it: run as is
        logger.warning("trust writer: cannot lower its priority: %s", exc)


def _widen_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not a pipe, not Linux, or refused
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ_BYTES)


def _waiting(fd: int) -> bool:
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def _store(writer: BatchWriter, exchanges: list[Exchange]) -> dict[str, object]:
    written, refused = writer.written, writer.refused
    failed = 0
    models: set[str] = set()
    try:
        models = writer.store_exchanges(exchanges, pause=os.sched_yield, every=_SLICE)
    except Exception:
        # The store itself failed (disk full, a broken file): these rows are lost, said so.
        logger.exception("trust writer: storing %d logged inferences failed", len(exchanges))
        failed = len(exchanges)
    return {
        "taken": len(exchanges),
        "written": writer.written - written,
        "refused": writer.refused - refused,
        "failed": failed,
        "models": sorted(models),
    }


if __name__ == "__main__":
    raise SystemExit(main())
