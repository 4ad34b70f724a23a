"""How much a fetched archive may unpack to, counted in the bytes it really unpacks to.

An archive from a ``storageUri`` is network input, and a small one can be made to unpack to
almost any size: a 1 MB zip of zeros is 1 GiB, an xz of zeros far more. Every archive
modelhost unpacks (a ``.zip`` or tar from http or a bucket, an OCI image's layers) is read
through an :class:`UnpackBudget` built from ``StorageSettings``: at most
``max_unpack_bytes`` in all, and at most ``max_unpack_ratio`` times the compressed size once
past :data:`RATIO_FREE_BYTES` (a small archive of text may compress very well). Headers
are checked first where a format has them (a zip's sizes), so an honest bomb is refused
before a byte is written, but only the bytes a decompressor actually returns are trusted:
they are counted as they come, and the first read past a limit raises
:class:`~modelhost.storage._errors.ArchiveTooLarge`. The caller removes what was written.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import tarfile
import zlib
from collections.abc import Callable
from typing import IO, Any, Protocol, cast

from modelhost.settings import StorageSettings
from modelhost.storage._errors import ArchiveTooLarge

__all__ = [
    "COPY_BUFFER",
    "RATIO_FREE_BYTES",
    "TAR_STREAM_BUFFER",
    "CorruptStream",
    "Readable",
    "UnpackBudget",
    "copy_counted",
    "decompressed",
    "hole_bytes",
]

COPY_BUFFER = 1024 * 1024
# What tarfile's stream mode asks for at once (its bufsize), and so the most one read
# decompresses: small enough that tarfile's 16 KiB reads do not re-slice a big buffer,
# large enough that Python's per-read cost stays below zlib's.
TAR_STREAM_BUFFER = 64 * 1024
# The least compressed input read at a time (a read asking for more output reads more).
_INPUT_CHUNK = 64 * 1024
# Unpacked bytes no ratio is asked of: below this, a well-compressing archive (a tokenizer,
# a text model) is never refused for its ratio, only for max_unpack_bytes.
RATIO_FREE_BYTES = 64 * 1024 * 1024

_GZIP = b"\x1f\x8b"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"
_ZSTD = b"\x28\xb5\x2f\xfd"


class Readable(Protocol):
    """What an archive is read from: a file, or a blob as it streams in."""

    def read(self, size: int = -1, /) -> bytes: ...


class CorruptStream(Exception):
    """The compressed stream does not decompress (the caller says which archive)."""


class UnpackBudget:
    """The bytes one archive (or one image's layers together) may unpack to."""

    def __init__(self, settings: StorageSettings, packed_bytes: int, what: str) -> None:
        self.what = what
        self.used = 0
        self._packed = packed_bytes
        self._ratio = settings.max_unpack_ratio
        by_size = settings.max_unpack_bytes or None
        by_ratio = (
            max(int(self._ratio * packed_bytes), RATIO_FREE_BYTES) if self._ratio > 0 else None
        )
        # Which setting to name when refusing: the lower limit.
        self._by_ratio = by_ratio is not None and (by_size is None or by_ratio < by_size)
        self.limit = by_ratio if self._by_ratio else by_size

    def declare(self, nbytes: int) -> None:
        """Refuse at once when the archive's own headers already say more than the limit."""
        if self.limit is not None and nbytes > self.limit:
            raise self._refusal(f"its headers say {_size(nbytes)}")

    def spend(self, nbytes: int) -> None:
        """Count ``nbytes`` more unpacked; past the limit, refuse the archive."""
        self.used += nbytes
        if self.limit is not None and self.used > self.limit:
            raise self._refusal("unpacking was stopped there")

    def _refusal(self, detail: str) -> ArchiveTooLarge:
        assert self.limit is not None
        if self._by_ratio:
            setting = f"MODELHOST_MAX_UNPACK_RATIO={self._ratio:g}"
            most = f"the most an archive of {_size(self._packed)} may unpack to at {setting}"
            if self.limit == RATIO_FREE_BYTES:
                most += f" (never less than {_size(RATIO_FREE_BYTES)})"
        else:
            setting = "MODELHOST_MAX_UNPACK_BYTES"
            most = f"the most any archive may unpack to ({setting})"
        return ArchiveTooLarge(
            f"{self.what} unpacks to more than {_size(self.limit)} ({detail}), {most}; "
            f"refused as a likely decompression bomb. If the model is genuine, raise "
            f"{setting.split('=')[0]} (0: no limit)."
        )


def decompressed(raw: Readable, budget: UnpackBudget) -> IO[bytes]:
    """``raw`` decompressed as its first bytes say (gzip, bzip2, xz, zstd; else as is),
    counted against ``budget``. Only ``read`` is offered (what ``tarfile``'s streams use)."""
    head = raw.read(len(_XZ))
    stream: Readable = _Prefixed(head, raw)
    for magic, new in (*_DECOMPRESSORS, (_ZSTD, _zstd_decompressor())):
        if new is not None and head.startswith(magic):
            stream = _Inflating(stream, magic, new)
            break
    # Anything else is read as is: tarfile then says what it is (a tar, or not one).
    return cast(IO[bytes], _Counting(stream, budget))


def copy_counted(source: Readable, out: IO[bytes], budget: UnpackBudget) -> None:
    """Copy ``source`` to ``out``, counting each chunk before it is written."""
    while chunk := source.read(COPY_BUFFER):
        budget.spend(len(chunk))
        out.write(chunk)


def hole_bytes(member: tarfile.TarInfo) -> int:
    """The bytes a sparse tar member adds on disk beyond those the stream holds for it
    (its holes, written out as zeros); 0 for any other member."""
    if not member.issparse():
        return 0
    # A list of (offset, size) extents; typeshed calls it bytes.
    extents = cast("list[tuple[int, int]]", member.sparse or [])
    return max(0, member.size - sum(size for _, size in extents))


class _Counting:
    """``read`` over a stream, spending every byte it returns from a budget."""

    def __init__(self, inner: Readable, budget: UnpackBudget) -> None:
        self._inner = inner
        self._budget = budget

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self._budget.spend(len(data))
        return data


class _Inflating:
    """A compressed stream's content, never more than asked for per read.

    The decompressor objects are used directly, not ``gzip.GzipFile`` and its kin: those
    go back to Python for every 8 KiB of input, which doubles the cost of unpacking.
    Streams one after another (``cat a.gz b.gz``, pigz, pbzip2) are read as one; whatever
    follows the last one (zero padding) is ignored, as tarfile's own streams do.
    """

    def __init__(self, raw: Readable, magic: bytes, new: Callable[[], Any]) -> None:
        self._raw = raw
        self._magic = magic
        self._new = new
        self._decompressor: Any = new()
        self._input = b""

    def read(self, size: int = -1, /) -> bytes:
        limit = size if size > 0 else COPY_BUFFER
        while self._decompressor is not None:
            decompressor = self._decompressor
            if decompressor.eof:
                self._next_stream(decompressor.unused_data)
                continue
            exhausted = False
            # zlib keeps what it did not take in unconsumed_tail; the others keep it inside.
            if not self._input and getattr(decompressor, "needs_input", True):
                # As much input as output asked for: zlib copies its unconsumed tail on
                # every call, so input much larger than each read's output costs twice.
                self._input = self._raw.read(max(limit, _INPUT_CHUNK))
                exhausted = not self._input
            try:
                data: bytes = decompressor.decompress(self._input, limit)
            except Exception as exc:  # zlib.error, OSError, LZMAError, ZstdError
                raise CorruptStream(str(exc) or type(exc).__name__) from exc
            self._input = getattr(decompressor, "unconsumed_tail", b"")
            if data:
                return data
            if exhausted and not decompressor.eof:
                raise CorruptStream("the compressed data ends before its end-of-stream marker")
        return b""

    def _next_stream(self, rest: bytes) -> None:
        while len(rest) < len(self._magic):
            more = self._raw.read(_INPUT_CHUNK)
            if not more:
                break
            rest += more
        if rest.startswith(self._magic):
            self._decompressor, self._input = self._new(), rest
        else:
            self._decompressor, self._input = None, b""


class _Prefixed:
    """``raw`` with the bytes already read from its start put back in front."""

    def __init__(self, head: bytes, raw: Readable) -> None:
        self._head = head
        self._raw = raw

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._raw.read(size)
        if size < 0:
            data, self._head = self._head + self._raw.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data


def _zstd_decompressor() -> Callable[[], Any] | None:
    """zstd's decompressor where Python has one (3.14's ``compression.zstd``)."""
    try:
        module = importlib.import_module("compression.zstd")
    except ImportError:
        return None
    new: Callable[[], Any] = module.ZstdDecompressor
    return new


# Magic bytes, and a fresh decompressor for one stream of that format.
_DECOMPRESSORS: tuple[tuple[bytes, Callable[[], Any]], ...] = (
    (_GZIP, lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)),
    (_BZIP2, bz2.BZ2Decompressor),
    (_XZ, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"
