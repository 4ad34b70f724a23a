"""Writing layer contents into a folder without ever writing outside it.

Image layers are tar archives (plain, gzip, bzip2 or xz, detected from the bytes) applied in
order onto one root, as a container runtime does: a ``.wh.<name>`` entry deletes ``<name>``
from the layers below, a ``.wh..wh..opq`` entry empties its folder of them. Entries with an
absolute path or a ``..`` component are refused (the whole fetch fails), every write goes
through a parent whose real path is checked to lie inside the root, absolute symlink targets
are rewritten relative to the root (``/models/a`` means the image's ``/models/a``, not the
host's), and :func:`check_links` refuses a result with a symlink that resolves outside it.
Devices and FIFOs are skipped; setuid, setgid and sticky bits are dropped. What the layers
unpack to is counted against the fetch's :class:`~modelhost.storage._inflate.UnpackBudget`.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import Protocol

from modelhost.errors import StorageError

from .._inflate import (
    CorruptStream,
    UnpackBudget,
    decompressed,
    hole_bytes,
)

__all__ = ["CorruptArchive", "Readable", "apply_layer", "check_links", "promote", "write_file"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
COPY_BUFFER = 1024 * 1024


class CorruptArchive(StorageError):
    """A layer that does not read as a tar archive (a corrupt download, or not a tar at all)."""


class Readable(Protocol):
    """What a layer is read from: a blob as it streams in."""

    def read(self, size: int = -1, /) -> bytes: ...


def apply_layer(root: Path, stream: Readable, name: str, budget: UnpackBudget) -> None:
    """Apply the tar archive read from ``stream`` onto ``root``; ``name`` labels errors."""
    layer = _Layer(root, name, budget)
    try:
        unpacked = decompressed(stream, budget)
        with tarfile.open(fileobj=unpacked, mode="r|", bufsize=COPY_BUFFER) as archive:
            for member in archive:
                layer.apply(archive, member)
    except (tarfile.TarError, zlib.error, EOFError, CorruptStream) as exc:
        raise CorruptArchive(f"{name}: not a readable tar archive ({exc})") from None
    except OSError as exc:
        raise StorageError(f"{name}: cannot unpack ({exc})") from None


def write_file(root: Path, relative: str, stream: Readable, name: str) -> None:
    """Write ``stream`` to ``root/relative`` (an artifact layer titled ``relative``)."""
    parts = _parts(relative, name)
    if not parts:
        raise StorageError(f"{name}: the title {relative!r} names no file")
    path = _inside(root, parts, name)
    if os.path.lexists(path):
        raise StorageError(f"{name}: two layers are titled {relative!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as out:
            shutil.copyfileobj(stream, out, COPY_BUFFER)
    except OSError as exc:
        raise StorageError(f"{name}: cannot write {relative!r} ({exc})") from None


def promote(rootfs: Path, dest: Path, folder: str = "models") -> None:
    """Move the image's ``/models`` (KServe's modelcar convention) into ``dest``; an image
    without that folder gives its whole file system. ``rootfs`` is removed."""
    candidate = os.path.realpath(rootfs / folder)
    source = Path(candidate) if _within(candidate, rootfs) and os.path.isdir(candidate) else rootfs
    for child in sorted(source.iterdir()):
        target = dest / child.name
        if os.path.lexists(target):
            raise StorageError(f"{child.name!r} is both in an image layer and an artifact layer")
        child.rename(target)
    shutil.rmtree(rootfs)


def check_links(root: Path) -> None:
    """Refuse a result holding a symlink whose target resolves outside ``root``."""
    for folder, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            path = os.path.join(folder, entry)
            if os.path.islink(path) and not _within(os.path.realpath(path), root):
                relative = os.path.relpath(path, root)
                raise StorageError(
                    f"the symlink {relative!r} points outside the model ({os.readlink(path)!r})"
                )


class _Layer:
    """One layer being applied: remembers what it wrote, for its opaque whiteouts."""

    def __init__(self, root: Path, name: str, budget: UnpackBudget):
        self.root = root
        self.name = name
        self.budget = budget
        self.written: set[str] = set()

    def apply(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _parts(member.name, self.name)
        if not parts:
            return
        base = parts[-1]
        if base == OPAQUE:
            self._prune(parts[:-1])
            return
        if base.startswith(WHITEOUT):
            _remove(_inside(self.root, [*parts[:-1], base[len(WHITEOUT) :]], self.name))
            return
        path = _inside(self.root, parts, self.name)
        if member.isdir():
            if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
                _remove(path)
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)
        elif member.isreg():
            self._file(archive, member, path)
        elif member.issym():
            self._symlink(member.linkname, path)
        elif member.islnk():
            self._hardlink(member.linkname, path)
        else:
            return  # devices and FIFOs mean nothing in a model folder
        self.written.add("/".join(parts))

    def _file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
        self.budget.spend(hole_bytes(member))
        _remove(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        source = archive.extractfile(member)
        if source is None:
            raise StorageError(f"{self.name}: cannot read {member.name!r}")
        with source, open(path, "xb") as out:
            shutil.copyfileobj(source, out, COPY_BUFFER)
        path.chmod((member.mode & 0o755) | 0o644)

    def _symlink(self, target: str, path: Path) -> None:
        if target.startswith("/"):
            # Absolute inside the image: relative to the root here, wherever the root ends up.
            inner = [part for part in target.split("/") if part not in ("", ".")]
            target = os.path.relpath(os.path.join(os.path.realpath(self.root), *inner), path.parent)
        _remove(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)

    def _hardlink(self, target: str, path: Path) -> None:
        parts = _parts(target, self.name)
        source = Path(os.path.realpath(os.path.join(self.root, *parts)))
        if not parts or not _within(str(source), self.root) or not source.is_file():
            raise StorageError(
                f"{self.name}: the hard link {path.name!r} to {target!r} has no file"
            )
        _remove(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, path)

    def _prune(self, folder: list[str]) -> None:
        """Empty ``folder`` of what lower layers put there, keeping what this layer wrote."""
        directory = os.path.realpath(os.path.join(self.root, *folder))
        if not _within(directory, self.root):
            raise StorageError(f"{self.name}: refusing a whiteout in {'/'.join(folder)!r}")
        if os.path.isdir(directory):
            self._prune_below(Path(directory), "/".join(folder))

    def _prune_below(self, directory: Path, prefix: str) -> None:
        for entry in list(directory.iterdir()):
            relative = f"{prefix}/{entry.name}" if prefix else entry.name
            kept = relative in self.written or any(
                written.startswith(relative + "/") for written in self.written
            )
            if not kept:
                _remove(entry)
            elif entry.is_dir() and not entry.is_symlink():
                self._prune_below(entry, relative)


def _parts(name: str, label: str) -> list[str]:
    """The components of an archive path, refusing absolute paths and ``..``."""
    if name.startswith("/"):
        raise StorageError(f"{label}: refusing the absolute path {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise StorageError(f"{label}: refusing the path {name!r}, which climbs out with '..'")
    return parts


def _inside(root: Path, parts: list[str], label: str) -> Path:
    """``root/parts`` with its parent's symlinks resolved, refused if that leaves ``root``."""
    parent = os.path.realpath(os.path.join(root, *parts[:-1]))
    if not _within(parent, root):
        raise StorageError(f"{label}: refusing {'/'.join(parts)!r}, whose folder is a symlink out")
    return Path(parent) / parts[-1]


def _within(path: str, root: Path) -> bool:
    real_root = os.path.realpath(root)
    return path == real_root or path.startswith(real_root + os.sep)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
