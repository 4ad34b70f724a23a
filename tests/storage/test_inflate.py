"""The decompressing reader the archive limits count through: formats, streams, truncation.

It uses the decompressor objects directly (for speed), so it must read what ``gzip``,
``bz2`` and ``lzma`` write, several streams one after another, and refuse a cut-off one.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable

import pytest

from modelhost.settings import StorageSettings
from modelhost.storage._errors import ArchiveTooLarge
from modelhost.storage._inflate import CorruptStream, UnpackBudget, decompressed

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "none": lambda data: data,
}
# Varied enough that every format spans many reads and output chunks.
CONTENT = b"".join(i.to_bytes(4, "little") * (i % 7 + 1) for i in range(60_000))


def read_all(data: bytes, settings: StorageSettings | None = None, size: int = 65536) -> bytes:
    budget = UnpackBudget(settings or StorageSettings(), len(data), "test")
    stream = decompressed(io.BytesIO(data), budget)
    chunks = []
    while chunk := stream.read(size):
        assert len(chunk) <= size
        chunks.append(chunk)
    assert budget.used == sum(map(len, chunks))
    return b"".join(chunks)


@pytest.mark.parametrize("kind", COMPRESSORS)
@pytest.mark.parametrize("size", [512, 65536, 1 << 20])
def test_each_format_reads_back_whole(kind: str, size: int) -> None:
    assert read_all(COMPRESSORS[kind](CONTENT), size=size) == CONTENT


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_streams_one_after_another_read_as_one(kind: str) -> None:
    half = len(CONTENT) // 2
    data = COMPRESSORS[kind](CONTENT[:half]) + COMPRESSORS[kind](CONTENT[half:])

    assert read_all(data) == CONTENT


def test_zero_padding_after_the_stream_is_ignored() -> None:
    assert read_all(gzip.compress(CONTENT) + bytes(10240)) == CONTENT


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_a_cut_off_stream_is_corrupt(kind: str) -> None:
    data = COMPRESSORS[kind](CONTENT)

    with pytest.raises(CorruptStream):
        read_all(data[: len(data) // 2])


def test_a_bad_checksum_is_corrupt() -> None:
    data = bytearray(gzip.compress(CONTENT))
    data[-5] ^= 0xFF  # the CRC-32 in the trailer

    with pytest.raises(CorruptStream):
        read_all(bytes(data))


def test_one_read_never_inflates_past_what_was_asked() -> None:
    # A bomb's input, read 64 KiB at a time, must not become gigabytes in memory at once.
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    bomb = compressor.compress(bytes(16 << 20)) + compressor.flush()  # 16 KiB
    stream = decompressed(io.BytesIO(bomb), UnpackBudget(StorageSettings(), len(bomb), "t"))

    assert len(stream.read(4096)) == 4096


def test_the_budget_stops_the_reader() -> None:
    data = gzip.compress(bytes(3 << 20))

    with pytest.raises(ArchiveTooLarge):
        read_all(data, StorageSettings(max_unpack_bytes=1 << 20))
