"""Linux scheduling policy per thread: SCHED_BATCH for the threads that serve in bunches.

A thread woken under SCHED_BATCH does not preempt the thread that woke it. gRPC's poller
thread (left SCHED_OTHER) then goes on collecting the calls that arrive while it runs and
wakes the event loop once for all of them; a gateway on the same core sends a replica
several calls before the replica reads. The policy is per thread, and a new thread takes
its creator's: that is why the loop's thread switches only after gRPC has started its own,
and why a server gives the thread it was started on its policy back when it stops. The
platform's gateway runs its loop under SCHED_BATCH too (``modelhost.local.server``), and the
processes it starts inherit that: a server told not to batch moves back to SCHED_OTHER.
"""

from __future__ import annotations

import logging
import os

__all__ = [
    "ThreadPolicy",
    "batch_this_thread",
    "restore_thread_policy",
    "thread_policy",
    "unbatch_this_thread",
]

ThreadPolicy = tuple[int, "os.sched_param"]

logger = logging.getLogger("modelhost.server")


def batch_this_thread() -> bool:
    """Put the calling thread under SCHED_BATCH; False (and nothing raised) where Linux says no."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        logger.debug("SCHED_BATCH refused: %s", exc)
        return False
    return True


def unbatch_this_thread() -> None:
    """Move the calling thread from SCHED_BATCH to SCHED_OTHER; any other policy stays."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_BATCH:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        logger.debug("Leaving SCHED_BATCH refused: %s", exc)


def thread_policy() -> ThreadPolicy | None:
    """The calling thread's policy and its parameters; None where they cannot be read."""
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0)
    except (AttributeError, OSError):
        return None


def restore_thread_policy(policy: ThreadPolicy | None) -> None:
    """Give the calling thread ``policy`` back (what :func:`thread_policy` read before)."""
    if policy is None:
        return
    try:
        os.sched_setscheduler(0, *policy)
    except OSError as exc:
        logger.debug("Restoring the thread's scheduling policy failed: %s", exc)
