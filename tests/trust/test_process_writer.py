"""The store's writer process, fed by the gateway's side through a real pipe.

The process is ``python -m modelhost.trust.writer_process`` over a SQLite file in the test's
folder; the rows are read back with a store of the test's own.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from pathlib import Path

from trust_support import label_response, row_request

from modelhost.trust.process_writer import ProcessWriter
from modelhost.trust.store import TrustStore


async def stored_one(writer: ProcessWriter, request_id: str) -> asyncio.subprocess.Process:
    """The writer's process, once it has stored one exchange of model ``m``."""
    writer.add_exchange("m", request_id, row_request([1.0]), label_response(1))
    await writer.settled()
    process = writer._process
    assert process is not None
    return process


async def test_exchanges_are_stored_by_the_process_and_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "trust.sqlite")
    written: list[set[str]] = []
    writer = ProcessWriter(path, written.append, nice=0)
    await writer.start()
    try:
        for i in range(500):
            writer.add_exchange(
                "iris", f"r{i}", row_request([float(i), 1.0]), label_response(i % 3)
            )
            if i % 100 == 0:
                await asyncio.sleep(0)  # several pipe writes, several rounds
        writer.add_exchange("iris", "broken", b"{", label_response(1))
        writer.add_exchange("other", "o1", row_request([2.0]), label_response(1))
        await writer.settled()
    finally:
        await writer.stop()
    assert writer.written == 501
    assert writer.refused == 1
    assert writer.dropped == 0
    assert set().union(*written) == {"iris", "other"}
    store = TrustStore(path)
    try:
        assert store.count("iris") == 500
        assert store.count("other") == 1
        assert store.row("iris", "r7") == [7.0, 1.0, 1]
    finally:
        store.close()


async def test_past_its_bound_an_exchange_is_dropped_and_counted(tmp_path: Path) -> None:
    frame_bytes = len(row_request([1.0])) + len(label_response(1)) + 16 + len("m") + len("r0")
    writer = ProcessWriter(
        str(tmp_path / "trust.sqlite"), lambda models: None, max_in_flight_bytes=3 * frame_bytes
    )
    await writer.start()
    try:
        for i in range(10):  # all in one loop iteration: nothing is acknowledged meanwhile
            writer.add_exchange("m", f"r{i}", row_request([1.0]), label_response(1))
        assert writer.dropped == 7
        await writer.settled()
        assert writer.written == 3
        # Acknowledged, the room is back.
        writer.add_exchange("m", "again", row_request([1.0]), label_response(1))
        await writer.settled()
        assert writer.written == 4
    finally:
        await writer.stop()


async def test_a_writer_process_that_dies_is_started_again_and_its_loss_counted(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "trust.sqlite")
    writer = ProcessWriter(path, lambda models: None, nice=0)
    await writer.start()
    try:
        process = await stored_one(writer, "before")
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        # Sent while the process is gone: kept and sent to the next one.
        writer.add_exchange("m", "after", row_request([2.0]), label_response(0))
        await asyncio.wait_for(writer.settled(), 30)
        assert writer._process is not process
        # Sent to a process that dies before it answers: lost, and counted so.
        process = writer._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        for i in range(5):
            writer.add_exchange("m", f"lost-{i}", row_request([3.0]), label_response(1))
        await asyncio.sleep(0.2)  # written to the pipe, never read
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(writer.settled(), 30)
        writer.add_exchange("m", "last", row_request([4.0]), label_response(1))
        await asyncio.wait_for(writer.settled(), 30)
    finally:
        await writer.stop()
    assert writer.written == 3
    assert writer.dropped == 5
    store = TrustStore(path)
    try:
        assert store.count("m") == 3
        assert store.row("m", "after") is not None
        assert store.row("m", "lost-0") is None
    finally:
        store.close()


async def test_stop_stores_what_was_sent_first(tmp_path: Path) -> None:
    path = str(tmp_path / "trust.sqlite")
    writer = ProcessWriter(path, lambda models: None, nice=0)
    await writer.start()
    for i in range(200):
        writer.add_exchange("m", f"r{i}", row_request([1.0]), label_response(1))
    await writer.stop()
    assert writer.written == 200
    writer.add_exchange("m", "late", row_request([1.0]), label_response(1))
    assert writer.dropped == 1
    store = TrustStore(path)
    try:
        assert store.count("m") == 200
    finally:
        store.close()


async def test_stop_does_not_wait_for_a_dead_process_to_be_started_again(tmp_path: Path) -> None:
    writer = ProcessWriter(str(tmp_path / "trust.sqlite"), lambda models: None, nice=0)
    await writer.start()
    process = writer._process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    await asyncio.sleep(0.1)  # the reader saw it die and waits to start another
    writer.add_exchange("m", "unsent", row_request([1.0]), label_response(1))
    await asyncio.wait_for(writer.stop(), 5)
    assert writer.dropped == 1
    assert writer._process is None


async def test_the_process_widens_its_pipe_and_reads_frames_across_reads(tmp_path: Path) -> None:
    """The pipe holds a round's window of exchanges (1 MiB where the system allows it), and
    frames larger than one read still arrive whole (the read buffer is reused)."""
    path = str(tmp_path / "trust.sqlite")
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())  # noqa: ASYNC240 - before the loop's work
    writer = ProcessWriter(path, lambda models: None, nice=0)
    await writer.start()
    try:
        process = await stored_one(writer, "r0")
        assert process.stdin is not None
        pipe = process.stdin.get_extra_info("pipe")
        assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) == min(1 << 20, limit)
        big = row_request([float(i) for i in range(300_000)])  # a frame of several reads
        assert len(big) > 2 << 20
        for i in range(3):
            writer.add_exchange("wide", f"big{i}", big, label_response(i))
        await writer.settled()
    finally:
        await writer.stop()
    assert (writer.written, writer.refused, writer.dropped) == (4, 0, 0)
    store = TrustStore(path)
    try:
        assert store.row("m", "r0") == [1.0, 1]
        assert store.count("wide") == 3
        assert store.row("wide", "big2")[-2:] == [299_999.0, 2]
    finally:
        store.close()
