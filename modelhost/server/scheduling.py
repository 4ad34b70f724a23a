"""Linux scheduling policy per thread: SCHED_BATCH for the threads that serve in bunches.

A thread woken under SCHED_BATCH does not preempt the thread that woke it. gRPC's poller
thread (left SCHED_OTHER) then goes on collecting the calls that arrive while it runs and
wakes the event loop once for all of them; a gateway on the same core sends a replica
several calls before the replica reads. The policy is per thread, and a new thread takes
its creator's: that is why the loop's thread switches only after gRPC has started its own.
"""

from __future__ import annotations

import logging
import os

__all__ = ["batch_this_thread"]

logger = logging.getLogger("modelhost.server")


def batch_this_thread() -> bool:
    """Put the calling thread under SCHED_BATCH; False (and nothing raised) where Linux says no."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        logger.debug("SCHED_BATCH refused: %s", exc)
        return False
    return True
