"""Archives that unpack to too much are refused, in every format, and leave nothing behind.

The bombs are made here: a zip of zeros (1 GiB in 1 MB, deflate's best), a tar.gz of
zeros, a sparse file that is all holes. They are served over real HTTP (port 0) where the
path a user takes matters, and unpacked directly where only the format does.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from storage_servers import HttpServer, read_tree, storage_settings

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage import download
from modelhost.storage._archive import unpack
from modelhost.storage._errors import ArchiveTooLarge
from modelhost.storage._inflate import RATIO_FREE_BYTES, UnpackBudget

MiB = 1024 * 1024
GiB = 1024 * MiB


def zip_of_zeros(name: str, nbytes: int) -> bytes:
    """A zip holding ``nbytes`` of zeros in about a thousandth of that.

    One MiB of zeros is deflated once and its blocks repeated: a full flush ends them on a
    byte boundary with nothing carried over, so the copies make one valid deflate stream.
    """
    assert nbytes % MiB == 0
    assert nbytes < 1 << 32  # no zip64
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = segment * (nbytes // MiB) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(nbytes // MiB):
        crc = zlib.crc32(bytes(MiB), crc)
    encoded = name.encode()
    sizes = (crc, len(data), nbytes, len(encoded))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, *sizes, 0) + encoded
    central = (
        struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, *sizes, 0, 0, 0, 0, 0, 0)
        + encoded
    )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


class _Zeros(io.RawIOBase):
    """``nbytes`` of zeros, read a piece at a time (never all in memory)."""

    def __init__(self, nbytes: int) -> None:
        self.left = nbytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def archive_bytes(suffix: str, files: dict[str, bytes | int]) -> bytes:
    """An archive of ``files`` (content, or a count of zeros) in the format ``suffix`` names."""
    buffer = io.BytesIO()
    if suffix == ".zip":
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
            for name, content in files.items():
                zipped.writestr(name, bytes(content) if isinstance(content, int) else content)
        return buffer.getvalue()
    mode = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}
    options = {"compresslevel": 1} if mode[suffix] in ("w:gz", "w:bz2") else {}
    with tarfile.open(fileobj=buffer, mode=mode[suffix], **options) as tarred:  # type: ignore[call-overload]
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = content if isinstance(content, int) else len(content)
            source = _Zeros(content) if isinstance(content, int) else io.BytesIO(content)
            tarred.addfile(info, source)
    return buffer.getvalue()


def assert_cache_is_empty(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert not any((cache / "models").iterdir())
    assert not any((cache / "tmp").iterdir())


def test_a_1_mb_zip_of_a_gib_of_zeros_from_http_is_refused(
    http_server: HttpServer, tmp_path: Path
) -> None:
    bomb = zip_of_zeros("weights.bin", GiB)
    assert len(bomb) < 1.1 * 1000 * 1000
    (http_server.root / "model.zip").write_bytes(bomb)

    with pytest.raises(ArchiveTooLarge, match="MODELHOST_MAX_UNPACK_RATIO=100") as caught:
        download(f"{http_server.url}/model.zip", storage_settings(tmp_path, {}))

    # Refused on the zip's own word, before a byte was written; 100 x its 1 MB is the limit.
    assert "model.zip unpacks to more than 101.3 MiB (its headers say 1.0 GiB)" in str(caught.value)
    assert isinstance(caught.value, errors.StorageError)
    assert errors.http_status(caught.value) == 500
    assert_cache_is_empty(tmp_path)


def test_a_tar_gz_bomb_is_stopped_by_the_bytes_it_unpacks_to(
    http_server: HttpServer, tmp_path: Path
) -> None:
    # Tar headers tell no lie about sizes, so only counting what gzip returns can stop it.
    data = archive_bytes(".tar.gz", {"config.json": b"{}", "weights.bin": 128 * MiB})
    (http_server.root / "model.tar.gz").write_bytes(data)

    with pytest.raises(ArchiveTooLarge, match="unpacking was stopped there") as caught:
        download(f"{http_server.url}/model.tar.gz", storage_settings(tmp_path, {}))

    assert "MODELHOST_MAX_UNPACK_RATIO" in str(caught.value)
    assert_cache_is_empty(tmp_path)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar makes the sparse archive")
def test_a_sparse_file_counts_at_its_full_size(http_server: HttpServer, tmp_path: Path) -> None:
    source = tmp_path / "sparse"
    source.mkdir()
    with open(source / "weights.bin", "wb") as holes:
        holes.truncate(GiB)  # all holes: a few bytes in the archive, 1 GiB once unpacked
    archive = http_server.root / "model.tar.gz"
    subprocess.run(
        ["tar", "--sparse", "-czf", str(archive), "-C", str(source), "weights.bin"], check=True
    )
    assert archive.stat().st_size < 64 * 1024

    with pytest.raises(ArchiveTooLarge, match="MODELHOST_MAX_UNPACK_RATIO"):
        download(f"{http_server.url}/model.tar.gz", storage_settings(tmp_path, {}))

    assert_cache_is_empty(tmp_path)


SUFFIXES = [".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_format_stops_at_max_unpack_bytes_and_removes_what_it_wrote(
    tmp_path: Path, suffix: str
) -> None:
    archive = tmp_path / f"model{suffix}"
    # The small file first, so that something is written before the limit is crossed.
    archive.write_bytes(archive_bytes(suffix, {"a/config.json": b"{}", "b.bin": 3 * MiB}))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "kept.txt").write_text("was here before")
    settings = StorageSettings(max_unpack_bytes=MiB)

    with pytest.raises(ArchiveTooLarge, match="MODELHOST_MAX_UNPACK_BYTES"):
        unpack(archive, dest, "http://host/model", settings)

    assert [p.name for p in dest.iterdir()] == ["kept.txt"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_format_unpacks_what_fits(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"model{suffix}"
    archive.write_bytes(archive_bytes(suffix, {"a/config.json": b"{}", "b.bin": 3 * MiB}))
    dest = tmp_path / "dest"
    dest.mkdir()

    unpack(archive, dest, "http://host/model", StorageSettings(max_unpack_bytes=4 * MiB))

    assert read_tree(dest) == {"a/config.json": b"{}", "b.bin": bytes(3 * MiB)}


def test_a_corrupt_compressed_stream_is_not_a_valid_archive(tmp_path: Path) -> None:
    data = bytearray(archive_bytes(".tar.gz", {"b.bin": b"x" * 100_000}))
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(errors.StorageError, match="not a valid archive"):
        unpack(archive, dest, "http://host/model", StorageSettings())

    assert list(dest.iterdir()) == []


def test_the_limit_is_the_lower_of_bytes_and_ratio_and_zero_turns_one_off() -> None:
    def limit(packed: int, **settings: float) -> int | None:
        return UnpackBudget(StorageSettings(**settings), packed, "x").limit  # type: ignore[arg-type]

    assert StorageSettings().max_unpack_bytes == 256 * GiB
    assert StorageSettings().max_unpack_ratio == 100
    assert limit(1000) == RATIO_FREE_BYTES  # a small archive may compress very well
    assert limit(10 * MiB) == 1000 * MiB
    assert limit(10 * GiB) == 256 * GiB
    assert limit(10 * MiB, max_unpack_ratio=0) == 256 * GiB
    assert limit(10 * MiB, max_unpack_bytes=MiB) == MiB
    assert limit(10 * MiB, max_unpack_bytes=0, max_unpack_ratio=0) is None


def test_the_limits_come_from_the_environment() -> None:
    settings = StorageSettings.from_env(
        {"MODELHOST_MAX_UNPACK_BYTES": "2GiB", "MODELHOST_MAX_UNPACK_RATIO": "25"}
    )
    assert (settings.max_unpack_bytes, settings.max_unpack_ratio) == (2 * GiB, 25.0)
    defaults = StorageSettings.from_env({})
    assert (defaults.max_unpack_bytes, defaults.max_unpack_ratio) == (256 * GiB, 100.0)
    with pytest.raises(ValueError, match="MODELHOST_MAX_UNPACK_BYTES='lots'"):
        StorageSettings.from_env({"MODELHOST_MAX_UNPACK_BYTES": "lots"})
