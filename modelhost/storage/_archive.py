"""Unpacking a downloaded model archive (.zip, .tar, .tar.gz, .tgz) without trusting its names.

KServe unpacks a ``storageUri`` that is a single archive, and so do we. An archive is
input from the network: a member named ``../../etc/cron.d/x`` or ``/root/.ssh/...``, or a
link pointing out of the folder, would write outside the model folder. Every member is
checked before it is written, and the archive is refused as a whole, with the offending
name, if one does not stay inside. Its size is checked too: what it unpacks to is counted
against ``StorageSettings``' limits as it is written (:mod:`modelhost.storage._inflate`).
A refused archive leaves nothing behind. Object names from a bucket listing are network
input too, and go through the same check (:func:`safe_join`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage._inflate import (
    TAR_STREAM_BUFFER,
    CorruptStream,
    UnpackBudget,
    copy_counted,
    decompressed,
    hole_bytes,
)

__all__ = [
    "ARCHIVE_SUFFIXES",
    "is_archive",
    "safe_join",
    "unpack",
    "unpack_if_single_archive",
    "unpack_in_place",
]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(name: str) -> bool:
    """Whether a file of this name is unpacked after download."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack_if_single_archive(folder: Path, uri: str, settings: StorageSettings) -> None:
    """Unpack ``folder``'s content in place when it is one archive file (KServe's rule)."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_file() and is_archive(entries[0].name):
        unpack_in_place(entries[0], folder, uri, settings)


def unpack_in_place(archive: Path, folder: Path, uri: str, settings: StorageSettings) -> None:
    """Replace ``archive``, a file in ``folder``, by its content.

    The archive is first moved beside the folder, so that a member with the archive's
    own name cannot overwrite it mid-read.
    """
    aside = folder.parent / f".archive-{archive.name}"
    archive.rename(aside)
    try:
        unpack(aside, folder, uri, settings, name=archive.name)
    finally:
        aside.unlink()


def unpack(archive: Path, dest: Path, uri: str, settings: StorageSettings, name: str = "") -> None:
    """Extract ``archive`` into ``dest``; a member that would land outside, or more bytes
    than the settings allow, refuses it all and removes what it had written."""
    name = name or archive.name
    budget = UnpackBudget(settings, archive.stat().st_size, f"{uri}: {name}")
    before = set(dest.iterdir())
    try:
        try:
            if name.lower().endswith(".zip"):
                _unpack_zip(archive, dest, uri, budget)
            else:
                _unpack_tar(archive, dest, uri, budget)
        except (
            tarfile.TarError,
            zipfile.BadZipFile,
            EOFError,
            CorruptStream,
            NotImplementedError,  # a zip compression method Python lacks
            RuntimeError,  # an encrypted zip member
        ) as exc:
            raise errors.StorageError(f"{uri}: {name} is not a valid archive: {exc}") from exc
        except OSError as exc:
            raise errors.StorageError(f"{uri}: cannot unpack {name}: {exc}") from exc
    except BaseException:
        for entry in set(dest.iterdir()) - before:
            _remove(entry)
        raise


def _unpack_zip(archive: Path, dest: Path, uri: str, budget: UnpackBudget) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for info in members:
            _check_name(info.filename, uri)
        budget.declare(sum(info.file_size for info in members))
        for info in members:
            parts = _parts(info.filename)
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # A symlink member is written as a plain file holding the target's name, as
            # zipfile's own extractall does, so links cannot escape; only names are checked.
            with zipped.open(info) as source, open(target, "wb") as out:
                copy_counted(source, out, budget)


def _unpack_tar(archive: Path, dest: Path, uri: str, budget: UnpackBudget) -> None:
    # One pass over the stream, each member checked as it comes: reading all the headers
    # first would decompress the whole archive twice, and a bomb's first pass is the bomb.
    with open(archive, "rb") as raw:
        stream = decompressed(raw, budget)
        with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_STREAM_BUFFER) as tarred:
            members = _checked_members(tarred, uri, budget)
            if hasattr(tarfile, "data_filter"):
                # Python's own guard too (3.10.12+): strips set-uid bits, refuses what slipped by.
                tarred.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12
                tarred.extractall(dest, members=members)
        # tarfile stops at its end marker; the compressed stream's checksum comes after it.
        while stream.read(TAR_STREAM_BUFFER):
            pass


def _checked_members(
    tarred: tarfile.TarFile, uri: str, budget: UnpackBudget
) -> Iterator[tarfile.TarInfo]:
    for member in tarred:
        _check_name(member.name, uri)
        if member.issym() or member.islnk():
            _check_link(member, uri)
        elif not (member.isfile() or member.isdir()):
            raise errors.StorageError(
                f"{uri}: archive member {member.name!r} is a device or fifo; refused."
            )
        budget.spend(hole_bytes(member))
        yield member


def _parts(name: str) -> list[str]:
    """A checked member name's path components, without empty and ``.`` ones."""
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_name(name: str, uri: str) -> None:
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    drive_like = len(normalized) > 1 and normalized[1] == ":"
    if path.is_absolute() or drive_like or ".." in path.parts:
        raise errors.StorageError(
            f"{uri}: archive member {name!r} would be written outside the model folder; "
            "the archive is refused."
        )


def _check_link(member: tarfile.TarInfo, uri: str) -> None:
    target = member.linkname.replace("\\", "/")
    # A symlink resolves from its own folder; a hard link names a path from the root.
    base = posixpath.dirname(member.name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if posixpath.isabs(target) or resolved == ".." or resolved.startswith("../"):
        raise errors.StorageError(
            f"{uri}: archive member {member.name!r} links to {member.linkname!r}, outside "
            "the model folder; the archive is refused."
        )


def safe_join(folder: Path, relpath: str, uri: str) -> Path:
    """``folder / relpath`` for a name that came from a remote listing, checked to stay inside."""
    _check_name(relpath, uri)
    target = folder.joinpath(*PurePosixPath(relpath.replace("\\", "/")).parts)
    if os.path.commonpath([folder, target]) != str(folder) or target == folder:
        raise errors.StorageError(f"{uri}: remote name {relpath!r} is not a file name.")
    return target
