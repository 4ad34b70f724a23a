"""The fork-server ("zygote") process: imports once, then forks replicas that skip the imports.

A replica of a tabular model spends most of its start importing (modelhost's server path,
sklearn, xgboost, lightgbm: 1.5-3 s here) and milliseconds loading its model. The zygote pays
the imports once, ahead of need, and then waits, single-threaded and with no event loop, on a
Unix socket. Each request names an argv, an environment and a folder, and passes the log
file's descriptor; the zygote forks, and the child becomes that replica: a session of its
own, the log file as stdout and stderr, ``/dev/null`` as stdin, the environment replaced, the
folder changed to, then the entry point (``modelhost.cli:main``) called with the argv, as
``python -m modelhost`` would call it. The child returns out of :func:`serve` to do that, so
that it exits through the interpreter's own shutdown, as a spawned replica does.

The zygote answers ``pid N`` on the request's connection, then ``exit CODE`` once it has
reaped the child (a negative code: killed by that signal, as ``asyncio`` says). It reaps
because only a process's parent may, and reporting on the same connection needs no
other channel: the platform reads one line per replica. A child asks the kernel to kill it
when the zygote dies (``PR_SET_PDEATHSIG``), and the zygote asks the same of the platform, so
no replica outlives the platform; a zygote that dies takes its replicas with it, and the
platform sees each connection close and counts them as killed.

Run as ``python -m modelhost.local.zygote_process --socket PATH --ready-fd N --entry
MODULE:FUNCTION --preload MODULE ...``; :mod:`modelhost.local.zygote` starts it and talks to it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

__all__ = ["HEADER", "Launch", "main", "serve"]

logger = logging.getLogger("modelhost.zygote")

# A request: its JSON's length (4 bytes, big-endian), then the JSON; the log fd rides along.
HEADER = struct.Struct(">I")
_MAX_REQUEST_BYTES = 16 * 1024 * 1024
_REQUEST_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass(frozen=True)
class Launch:
    """What a forked child runs once it has left the zygote's loop."""

    entry: Callable[[Sequence[str]], int]
    argv: list[str]


class _Request:
    """One replica to fork: argv (the entry point's), environment, folder, log descriptor."""

    def __init__(self, conn: socket.socket) -> None:
        conn.settimeout(_REQUEST_TIMEOUT_S)
        head, fds, _flags, _address = socket.recv_fds(conn, HEADER.size, maxfds=1)
        self.log_fd = fds[0] if fds else -1
        if len(head) != HEADER.size or self.log_fd < 0:
            raise ValueError("a request starts with its length and the log file's descriptor")
        (size,) = HEADER.unpack(head)
        if size > _MAX_REQUEST_BYTES:
            raise ValueError(f"a request of {size} bytes")
        body = bytearray()
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("the request ended early")
            body += chunk
        document = json.loads(body)
        self.argv: list[str] = [str(a) for a in document["argv"]]
        self.env: dict[str, str] = {str(k): str(v) for k, v in document["env"].items()}
        self.cwd: str | None = document.get("cwd")


class _Zygote:
    """The loop: accept requests, fork, reap, report. One thread, no event loop."""

    def __init__(self, listener: socket.socket, entry: Callable[[Sequence[str]], int]) -> None:
        self.listener = listener
        self.entry = entry
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.pid = os.getpid()
        self.start_folder = os.getcwd()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._handlers: dict[int, object] = {}

    def run(self) -> Launch | None:
        """Serve until SIGTERM (None); in a forked child, what that child is to run."""
        for signum in _SIGNALS:
            self._handlers[signum] = signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self._wake_write)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self._wake_read, selectors.EVENT_READ, "signal")
        try:
            while not self.stopping:
                for key, _events in self.selector.select():
                    if key.data == "accept":
                        launch = self._accept()
                        if launch is not None:
                            return launch
                    elif key.data == "signal":
                        self._drain_wakeups()
                        self._reap()
                    else:
                        self._peer_closed(key.fileobj)  # type: ignore[arg-type]
        finally:
            if os.getpid() == self.pid:
                self._close()
        return None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:
            self.stopping = True

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 512):
                pass

    def _accept(self) -> Launch | None:
        try:
            conn, _address = self.listener.accept()
        except BlockingIOError:
            return None
        try:
            request = _Request(conn)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("zygote: a bad request: %s", exc)
            _reply(conn, f"error {exc}")
            conn.close()
            return None
        try:
            _flush_stdio()
            pid = os.fork()
        except OSError as exc:
            os.close(request.log_fd)
            _reply(conn, f"error fork: {exc}")
            conn.close()
            return None
        if pid == 0:
            return self._become(request, conn)
        os.close(request.log_fd)
        conn.setblocking(False)
        self.children[pid] = conn
        # Read to learn that the platform let go; a reply is written, never awaited.
        self.selector.register(conn, selectors.EVENT_READ, pid)
        _reply(conn, f"pid {pid}")
        return None

    def _become(self, request: _Request, conn: socket.socket) -> Launch:
        """In the child: leave the zygote behind and become the replica the request names."""
        try:
            os.setsid()
            _die_with_parent(self.pid)
            signal.set_wakeup_fd(-1)
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            self.selector.close()
            self.listener.close()
            for other in self.children.values():
                other.close()
            conn.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(request.log_fd, 1)
            os.dup2(request.log_fd, 2)
            os.close(request.log_fd)
            if request.cwd:
                os.chdir(request.cwd)
            if sys.path and sys.path[0] == self.start_folder:
                # ``python -m`` puts the folder it starts in first on the path.
                sys.path[0] = os.getcwd()
            os.environ.clear()
            os.environ.update(request.env)
            # As ``python -m modelhost`` has it: custom model scripts may read it.
            sys.argv = [_MODELHOST_MAIN, *request.argv]
            _reseed()
        except BaseException as exc:
            # Whatever went wrong, the child must never go back to the zygote's loop.
            with contextlib.suppress(OSError):
                os.write(2, f"modelhost zygote: the replica failed to start: {exc}\n".encode())
            os._exit(70)
        return Launch(self.entry, request.argv)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                conn.setblocking(True)
                _reply(conn, f"exit {code}")
            self._forget(conn)

    def _peer_closed(self, conn: socket.socket) -> None:
        # The platform reads nothing it did not ask for; data or EOF, the child runs on.
        try:
            data = conn.recv(512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(conn)

    def _forget(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        conn.close()

    def _close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.selector.close()
        self.listener.close()
        for conn in self.children.values():
            conn.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


_MODELHOST_MAIN = str(Path(__file__).resolve().parents[1] / "__main__.py")


def _reply(conn: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(line.encode() + b"\n")


def _flush_stdio() -> None:
    # Else what the zygote buffered is written again by every child.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _die_with_parent(parent: int) -> None:
    """SIGKILL from the kernel when the zygote dies; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl.restype = ctypes.c_int
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(1)


def _reseed() -> None:
    """Each child its own random streams: the zygote's state was copied into every one.

    ``random`` reseeds itself after a fork; numpy's legacy global generator does not.
    """
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _preload(modules: Sequence[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            # A runtime that is not installed: its replicas import (and fail) as spawned ones.
            logger.info("zygote: %s not preloaded: %s", name, exc)


def _entry(spec: str) -> Callable[[Sequence[str]], int]:
    module_name, _, function = spec.partition(":")
    entry: Callable[[Sequence[str]], int] = getattr(importlib.import_module(module_name), function)
    return entry


def serve(
    socket_path: str, entry: str, preload: Sequence[str], ready_fd: int | None = None
) -> Launch | None:
    """Import, listen, and fork until SIGTERM; in a child, return what it is to run."""
    run = _entry(entry)
    _preload(preload)
    threads = threading.active_count()
    if threads != 1:
        # A fork copies one thread: a lock another thread held stays locked in the child.
        # (OpenBLAS starts its pool when numpy loads; it stops and restarts it around a fork
        # with pthread_atfork handlers of its own, so C threads are not counted here.)
        raise RuntimeError(f"{threads} threads after the imports: forking would not be safe")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o077)  # the owner only: a request runs any argv
    try:
        listener.bind(socket_path)
    finally:
        os.umask(old_mask)
    listener.listen(64)
    listener.setblocking(False)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    return _Zygote(listener, run).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelhost-zygote")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--entry", default="modelhost.cli:main")
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--parent", type=int, default=None, help="die with this process")
    args = parser.parse_args(argv)
    if args.parent is not None:
        _die_with_parent(args.parent)
    launch = serve(args.socket, args.entry, args.preload, args.ready_fd)
    if launch is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.socket)
        return 0
    return launch.entry(launch.argv)


if __name__ == "__main__":
    sys.exit(main())
