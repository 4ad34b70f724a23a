"""Replicas a killed platform left behind: found again from its state and killed.

A platform that dies at once (``kill -9``, the OOM killer) cannot stop its replicas. On Linux
each replica asks the kernel for SIGKILL when the platform dies (``PR_SET_PDEATHSIG``, set in
:mod:`modelhost.local.replica`); that ends the replica itself, not what it spawned, and not a
replica on a system without it. So every replica is also recorded in the platform's state,
with the platform's pid and start time, and carries a random id in its environment
(``MODELHOST_REPLICA_ID``, inherited by whatever it spawns). The next platform on the same
home, or ``modelhost down``, kills what a dead platform's records name: every process of a
recorded replica's session (the replica runs in a session of its own) whose environment
holds that replica's id. The id is the proof a process is ours: a pid alone may have been
reused by then.

What escapes: a process that left the replica's session (``setsid``) or replaced its
environment, and any replica on a system without ``/proc`` (there the records are kept and
nothing is killed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from modelhost.local.replica import REPLICA_ID_VARIABLE, Replica
from modelhost.local.store import Store

__all__ = ["ReplicaLedger", "reap_leftovers", "start_ticks"]

logger = logging.getLogger("modelhost.local")

_PROC = Path("/proc")
# How long a killed leftover may take to go: SIGKILL is not refused, so only a process in
# uninterruptible sleep (a hung disk, a dead NFS server) takes longer.
_GONE_WITHIN_S = 5.0


class ReplicaLedger:
    """Writes down each replica the platform starts, and crosses it out once it has exited."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._owner = os.getpid()
        self._owner_ticks = start_ticks(self._owner) or 0

    def started(self, replica: Replica) -> None:
        assert replica.pid is not None
        self._store.record_replica(replica.id, replica.pid, self._owner, self._owner_ticks)

    def ended(self, replica: Replica) -> None:
        self._store.forget_replica(replica.id)


def reap_leftovers(store: Store, timeout: float = _GONE_WITHIN_S) -> list[int]:
    """Kill what the recorded replicas of dead platforms left running; the pids killed.

    Blocking (it reads ``/proc`` and waits for the processes to go): run it in a thread.
    Records of a platform that still runs are left alone; the others are crossed out.
    """
    if not (_PROC / "self" / "stat").exists():
        return []
    leftovers = [r for r in store.replica_records() if not _alive(r.owner, r.owner_ticks)]
    if not leftovers:
        return []
    ids = {r.pid: r.id for r in leftovers}
    killed = []
    for pid, session in _sessions():
        replica_id = ids.get(session)
        if replica_id is None or pid == os.getpid() or not _carries(pid, replica_id):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    if killed:
        logger.warning(
            "killed %d process(es) that replicas of a platform that died left running: %s",
            len(killed),
            ", ".join(map(str, killed)),
        )
    store.forget_replicas([r.id for r in leftovers])
    return killed


def start_ticks(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (with its pid, who it is)."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def _alive(pid: int, ticks: int | None = None) -> bool:
    """Runs (a zombie does not), and, given ``ticks``, is the process that started then."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces and parentheses itself.
    return text[text.rindex(")") + 2 :].split()


def _sessions() -> Iterator[tuple[int, int]]:
    """(pid, session id) of every live process."""
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X"):
            yield int(entry.name), int(fields[3])


def _carries(pid: int, replica_id: str) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False  # another user's process, or gone
    return f"{REPLICA_ID_VARIABLE}={replica_id}".encode() in environ.split(b"\0")
