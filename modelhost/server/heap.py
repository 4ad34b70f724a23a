"""Why a server process keeps the memory of freed request buffers instead of returning it.

glibc's malloc serves a block past its mmap threshold (128 KiB at first, raised as such
blocks are freed) with a fresh mapping, and gives the free top of its heap back to the
kernel past its trim threshold. A request of a few hundred KB (a 600 KB image tensor: the
socket's reads, the body joined, the JSON decoded) then comes in fresh pages every time,
each a page fault: ~300 a request for that tensor and ~2,000 for its JSON form, as much as
half of the server's time (bench/RESULTS.md, run 19). Whether it happens depended on the
heap's layout at start-up, so the same server ran at 900 or 1,900 requests a second by how
it was launched. Fixed thresholds keep blocks under ``mmap_threshold`` in the heap and up to
four times that free at its top; larger blocks still get their own mapping and go back.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["keep_freed_buffers"]

logger = logging.getLogger("modelhost.server")

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_buffers(mmap_threshold: int) -> bool:
    """Fix glibc malloc's mmap threshold at ``mmap_threshold`` bytes and its trim threshold
    at four times that, for the whole process; False (nothing changed) for 0, or where the
    C library is not glibc. glibc takes at most 32 MiB as an mmap threshold."""
    if mmap_threshold <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 when it took the value; musl's answers 0 and ignores it.
    if mallopt(_M_MMAP_THRESHOLD, mmap_threshold) != 1:
        logger.debug("malloc kept its mmap threshold (not glibc, or %d refused)", mmap_threshold)
        return False
    mallopt(_M_TRIM_THRESHOLD, 4 * mmap_threshold)
    return True
