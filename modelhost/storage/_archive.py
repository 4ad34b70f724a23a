"""Unpacking a downloaded model archive (.zip, .tar, .tar.gz, .tgz) without trusting its names.

KServe unpacks a ``storageUri`` that is a single archive, and so do we. An archive is
input from the network: a member named ``../../etc/cron.d/x`` or ``/root/.ssh/...``, or a
link pointing out of the folder, would write outside the model folder. Every member is
checked before anything is written, and the archive is refused as a whole, with the
offending name, if one does not stay inside. Object names from a bucket listing are
network input too, and go through the same check (:func:`safe_join`).
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from modelhost import errors

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


def unpack_if_single_archive(folder: Path, uri: str) -> None:
    """Unpack ``folder``'s content in place when it is one archive file (KServe's rule)."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_file() and is_archive(entries[0].name):
        unpack_in_place(entries[0], folder, uri)


def unpack_in_place(archive: Path, folder: Path, uri: str) -> None:
    """Replace ``archive``, a file in ``folder``, by its content.

    The archive is first moved beside the folder, so that a member with the archive's
    own name cannot overwrite it mid-read.
    """
    aside = folder.parent / f".archive-{archive.name}"
    archive.rename(aside)
    try:
        unpack(aside, folder, uri)
    finally:
        aside.unlink()


def unpack(archive: Path, dest: Path, uri: str) -> None:
    """Extract ``archive`` into ``dest``; a member that would land outside refuses it all."""
    try:
        if archive.name.lower().endswith(".zip"):
            _unpack_zip(archive, dest, uri)
        else:
            _unpack_tar(archive, dest, uri)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise errors.StorageError(f"{uri}: {archive.name} is not a valid archive: {exc}") from exc


def _unpack_zip(archive: Path, dest: Path, uri: str) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            _check_name(info.filename, uri)
            # zipfile writes a symlink member as a plain file holding the target's name,
            # so links cannot escape; only names are checked.
        zipped.extractall(dest)


def _unpack_tar(archive: Path, dest: Path, uri: str) -> None:
    with tarfile.open(archive) as tarred:
        members = tarred.getmembers()
        for member in members:
            _check_name(member.name, uri)
            if member.issym() or member.islnk():
                _check_link(member, uri)
            elif not (member.isfile() or member.isdir()):
                raise errors.StorageError(
                    f"{uri}: archive member {member.name!r} is a device or fifo; refused."
                )
        if hasattr(tarfile, "data_filter"):
            # Python's own guard too (3.10.12+): strips set-uid bits, refuses what slipped by.
            tarred.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.10.12
            tarred.extractall(dest, members=members)


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
