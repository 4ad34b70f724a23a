"""Shared helpers for the registry tests: the app under uvicorn, a PostgreSQL cluster."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving import serve_asgi

from modelhost.registry import RegistryApp, RegistrySettings, RegistryStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")
API = "/api/model_registry/v1"


@contextmanager
def serve_registry(url: str) -> Iterator[int]:
    """A registry over the database at ``url``, served on a free port."""
    store = RegistryStore(url)
    try:
        with serve_asgi(RegistryApp(store, RegistrySettings()), lifespan="off") as port:
            yield port
    finally:
        store.close()


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL cluster cannot be started here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL's binaries are not in {PG_BIN}"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    if os.getuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: postgres refuses to run as root"
    return None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throw-away PostgreSQL cluster (as ``nobody`` when run as root); its base URL."""
    home = Path(tempfile.mkdtemp(prefix="registry-pg-"))
    data, sockets = home / "data", home / "sockets"
    sockets.mkdir()
    prefix: list[str] = []
    if os.getuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (home, sockets):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    # PostgreSQL takes a port number, not a socket: the free one the OS just gave.
    port = int(probe.getsockname()[1])
    probe.close()
    run = {"check": True, "capture_output": True, "cwd": home}
    subprocess.run(
        [*prefix, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        **run,  # type: ignore[call-overload]
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = home / "log"
    start = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options]
    subprocess.run([*prefix, *start, "start"], **run)  # type: ignore[call-overload]
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run([*prefix, *stop], **run)  # type: ignore[call-overload]
        shutil.rmtree(home, ignore_errors=True)


def new_database(base_url: str, name: str) -> str:
    """A fresh database named ``name`` in the cluster at ``base_url``; its URL."""
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
