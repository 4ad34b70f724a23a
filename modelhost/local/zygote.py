"""The platform's side of the fork-server: starts the zygote, asks it for replicas, hears them end.

Starting a tabular model's replica is mostly importing; the zygote
(:mod:`modelhost.local.zygote_process`) has done that once, so a replica forked from it
serves in a fraction of a spawned one's start. :class:`Zygote` starts it ahead of need (its
imports run while the platform starts, and replicas spawn as before until it is ready), and
:meth:`Zygote.fork` hands back a :class:`ForkedProcess`, which a
:class:`~modelhost.local.replica.Replica` treats as the process it would have spawned: a
pid, a return code, a ``wait``.

Which replicas fork: a local ``modelhost serve`` of a runtime the zygote has imported
(:data:`TABULAR_RUNTIMES`: the ones whose import is the start), whose environment agrees with
the zygote's on what is read at import (thread counts of the math libraries, Python's own
variables, ``LD_*``): a forked child keeps what its imports read. Anything else, and any
request the zygote does not answer, is spawned as before.

The reaper (:mod:`modelhost.local.reaper`) finds a dead platform's leftovers by the replica
id in ``/proc/<pid>/environ``, which shows a process's environment as it was at ``exec``: a
forked replica's shows the zygote's. It need not be found: it dies with the zygote, which
dies with the platform. What it spawns carries the id, as a spawned replica's children do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from modelhost import errors
from modelhost.local.zygote_process import HEADER

__all__ = [
    "TABULAR_PRELOAD",
    "TABULAR_RUNTIMES",
    "ForkedProcess",
    "Zygote",
    "ZygoteUnavailable",
]

logger = logging.getLogger("modelhost.local")

# The runtimes whose replicas fork: each imports a framework that costs seconds and loads a
# model in milliseconds. Torch, ONNX Runtime, Hugging Face and LLM replicas load for seconds
# or minutes anyway, and their frameworks (CUDA, thread pools) are not safe to fork once used.
TABULAR_RUNTIMES = frozenset({"sklearn", "xgboost", "lightgbm"})
# What the zygote imports: the server path a replica runs and the frameworks' modules that
# unpickling a typical model pulls in. A module that is not installed is skipped.
TABULAR_PRELOAD = (
    "modelhost.server.model_server",
    "modelhost.server.grpc.server",  # model_server imports it when it starts gRPC
    "modelhost.runtimes.detect",
    "modelhost.storage",
    # What the serve path imports on first use (the CLI's lazy imports among them).
    "modelhost.cli.serve_repository",
    "modelhost.cli.token_commands",
    "uvicorn.lifespan.off",
    "encodings.idna",
    "uvloop",
    "grpc",
    "joblib",
    "sklearn",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.svm",
    "sklearn.neighbors",
    "xgboost",
    "lightgbm",
)
# Read by the imports the zygote has done: a replica that sets them otherwise is spawned.
_IMPORT_TIME_PREFIXES = ("PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "KMP_", "GRPC_")
_SERVE = ("-m", "modelhost", "serve")
_START_TIMEOUT_S = 120.0
_MAX_SOCKET_PATH = 100


class ZygoteUnavailable(errors.ServerNotReady):
    """The zygote is not running, or did not answer: spawn instead."""


class ForkedProcess:
    """A replica's process as the zygote reports it: ``pid``, ``returncode``, ``wait``."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pid = pid
        self.returncode: int | None = None
        self._reader = reader
        self._writer = writer
        self._exited = asyncio.Event()
        self._watch = asyncio.ensure_future(self._watch_exit())

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def _watch_exit(self) -> None:
        code = -signal.SIGKILL
        try:
            line = await self._reader.readline()
            word, _, value = line.decode().partition(" ")
            if word == "exit":
                code = int(value)
            else:
                # The zygote died: the kernel kills its children with it (PR_SET_PDEATHSIG).
                logger.warning("the zygote went away; replica pid %s is killed with it", self.pid)
        except (OSError, ValueError) as exc:
            logger.warning("lost the zygote's report on pid %s: %s", self.pid, exc)
        finally:
            self.returncode = code
            self._writer.close()
            self._exited.set()


class Zygote:
    """One fork-server process of this platform, for the replicas of :data:`TABULAR_RUNTIMES`."""

    def __init__(
        self,
        folder: Path,
        env: Mapping[str, str],
        *,
        preload: Sequence[str] = TABULAR_PRELOAD,
        runtimes: frozenset[str] = TABULAR_RUNTIMES,
        entry: str = "modelhost.cli:main",
        revive_after_s: float = 30.0,
    ) -> None:
        self.socket_path = folder / "zygote.sock"
        self._private_folder: Path | None = None
        self.log_path = folder / "logs" / "zygote.log"
        self.env = dict(env)
        self.preload = tuple(preload)
        self.runtimes = runtimes
        self.entry = entry
        # A zygote that died is started again no sooner than this after its last start.
        self.revive_after_s = revive_after_s
        self.ready = False
        self.ready_s: float | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._stopped = False
        self._revival: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self.ready and self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the process; it takes requests once its imports are done (in the background)."""
        self.ready = False
        self._started_at = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._private_folder is None and len(str(self.socket_path.resolve())) > _MAX_SOCKET_PATH:
            # Unix socket paths end at 108 bytes: a private folder (0700) in /tmp instead.
            self._private_folder = Path(tempfile.mkdtemp(prefix="modelhost-zygote-"))
            self.socket_path = self._private_folder / "zygote.sock"
        ready_read, ready_write = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "modelhost.local.zygote_process",
            "--socket",
            str(self.socket_path),
            "--entry",
            self.entry,
            "--ready-fd",
            str(ready_write),
            # It asks the kernel to kill it when this process dies (before its imports).
            "--parent",
            str(os.getpid()),
        ]
        for module in self.preload:
            argv += ["--preload", module]
        started = time.monotonic()
        try:
            with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - a local file
                self._process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=self.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(ready_write,),
                )
        finally:
            os.close(ready_write)
        self._waiter = asyncio.ensure_future(self._await_ready(ready_read, started))

    async def wait_ready(self, timeout: float = _START_TIMEOUT_S) -> bool:
        """Until its imports are done (True) or it has exited (False)."""
        if self._revival is not None:
            await asyncio.gather(self._revival, return_exceptions=True)
        if self._waiter is None:
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        return self.running

    async def _await_ready(self, ready_read: int, started: float) -> None:
        # The descriptor has one owner, this coroutine, and is closed once: a pipe transport
        # and a file object over it would both close its number, and the second close could
        # hit whatever socket the platform accepted under that number meanwhile.
        loop = asyncio.get_running_loop()
        os.set_blocking(ready_read, False)
        received = bytearray()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                chunk = os.read(ready_read, 256)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            received.extend(chunk)
            if (not chunk or b"\n" in received) and not done.done():
                done.set_result(None)

        loop.add_reader(ready_read, readable)
        try:
            await done
        finally:
            loop.remove_reader(ready_read)
            os.close(ready_read)
        line = bytes(received).split(b"\n", 1)[0]
        if line.strip() == b"ready":
            self.ready = True
            self.ready_s = time.monotonic() - started
            logger.info("zygote ready in %.2fs (pid %s)", self.ready_s, self.pid)
        else:
            logger.warning("the zygote did not start; replicas spawn (see %s)", self.log_path)

    def accepts(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        """Whether a replica of this argv and environment is forked (else it is spawned)."""
        if not self.running:
            self._revive()
            return False
        if len(argv) < 4 or argv[0] != sys.executable:
            return False
        if tuple(argv[1:4]) != _SERVE or _runtime(argv[4:]) not in self.runtimes:
            return False
        return _import_time(env) == _import_time(self.env)

    async def fork(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None, log_fd: int
    ) -> ForkedProcess:
        """A replica of ``argv`` (``python -m modelhost serve ...``) forked from the zygote."""
        if not self.running:
            raise ZygoteUnavailable("the zygote is not running")
        request = json.dumps({"argv": list(argv[3:]), "env": dict(env), "cwd": cwd}).encode()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, str(self.socket_path))
            head = HEADER.pack(len(request))
            sent = socket.send_fds(sock, [head + request], [log_fd])
            if sent < len(head) + len(request):
                await loop.sock_sendall(sock, (head + request)[sent:])
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError as exc:
            sock.close()
            raise ZygoteUnavailable(f"the zygote did not take the request: {exc}") from exc
        line = await reader.readline()
        word, _, value = line.decode(errors="replace").strip().partition(" ")
        if word != "pid":
            writer.close()
            raise ZygoteUnavailable(f"the zygote did not fork: {value or 'it went away'}")
        return ForkedProcess(int(value), reader, writer)

    def _revive(self) -> None:
        """A zygote that died (a crash, the OOM killer) starts again, at most once a while."""
        process = self._process
        if self._stopped or process is None or process.returncode is None:
            return
        if self._revival is not None and not self._revival.done():
            return
        if time.monotonic() - self._started_at < self.revive_after_s:
            return
        logger.warning("the zygote exited with code %s; starting it again", process.returncode)
        self._revival = asyncio.ensure_future(self.start())

    async def stop(self) -> None:
        """SIGTERM, after the replicas it forked are gone (its death would kill them)."""
        self._stopped = True
        if self._revival is not None:
            await asyncio.gather(self._revival, return_exceptions=True)
        process = self._process
        if process is None:
            return
        self.ready = False
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if self._waiter is not None:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waiter
        if self._private_folder is not None:
            shutil.rmtree(self._private_folder, ignore_errors=True)

    def kill_now(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


def _runtime(args: Sequence[str]) -> str | None:
    """The ``--runtime`` (or ``--model_format``) a serve argv names, if any."""
    names = ("--runtime", "--model_format", "--model-format")
    for index, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag in names:
            if sep:
                return value.strip().lower()
            if index + 1 < len(args):
                return args[index + 1].strip().lower()
    return None


def _import_time(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_PREFIXES)}
