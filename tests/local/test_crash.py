"""A platform killed at once (``kill -9``) takes its replicas, and what they spawned, with it.

The replica itself dies with the platform (the kernel's parent-death signal); what it
spawned is killed by the next platform on the same home, from the records in its state.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from platform_fixtures import process_alive, run_modelhost

from modelhost.local.client import PlatformClient
from modelhost.local.reaper import reap_leftovers, start_ticks
from modelhost.local.store import Store

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal and /proc are Linux's"
)

APP = Path(__file__).resolve().parent / "apps" / "spawning_server.py"
SPAWNER = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: spawner
spec:
  predictor:
    containers:
      - name: kserve-container
        command: ["python", "{app}"]
        args: ["--http_port", "0"]
        env:
          - name: SPAWNED_DIR
            value: "{spawned}"
"""


def _modelhost(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_modelhost(*args, home=home, cwd=cwd)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int, port: int) -> bool:
    return not process_alive(pid) and not _listening(port)


def _eventually(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def _spawned(folder: Path) -> dict[int, int]:
    """{pid: port} of the helpers the replicas spawned."""
    return {int(p.name): int(p.read_text()) for p in folder.iterdir() if p.suffix == ""}


def _replicas(client: PlatformClient) -> dict[int, int]:
    """{pid: http port} of the service's replicas, once one is ready."""
    found: dict[int, int] = {}

    def ready() -> bool:
        rows = client.revisions("default", "spawner")
        found.update(
            {
                r["pid"]: r["httpPort"]
                for row in rows
                for r in row["replicas"]
                if r["state"] == "Ready"
            }
        )
        return bool(found)

    _eventually(ready, "a ready replica", timeout=60)
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    _modelhost("down", home=home, cwd=tmp_path)
    # A test that failed half-way may leave a replica's helper: none outlives the test.
    spawned = tmp_path / "spawned"
    for pid in _spawned(spawned) if spawned.is_dir() else {}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_the_platform_leaves_no_replica_running(tmp_path: Path, home: Path) -> None:
    spawned = tmp_path / "spawned"
    spawned.mkdir()
    up = _modelhost("up", "-d", "--port", "0", "--grpc-port", "0", home=home, cwd=tmp_path)
    assert up.returncode == 0, up.stderr + up.stdout
    address = json.loads((home / "platform.json").read_text())
    client = PlatformClient(address["api"])
    client.apply(SPAWNER.format(app=APP, spawned=spawned).encode(), source="spawner.yaml")
    replicas = _replicas(client)
    _eventually(lambda: len(_spawned(spawned)) == 1, "the replica's helper")
    helpers = _spawned(spawned)
    ((replica, replica_port),) = replicas.items()
    ((helper, helper_port),) = helpers.items()
    assert _listening(replica_port)
    assert _listening(helper_port)

    os.kill(address["pid"], signal.SIGKILL)
    # The replica goes with its platform, at once and without anyone's help.
    # Gone means its port closed too: a killed process's leader turns zombie while its
    # other threads may still be exiting, holding the process's files a moment longer.
    _eventually(lambda: _gone(replica, replica_port), f"replica {replica} gone")
    # What it spawned is still there: the next platform on this home must kill it.
    assert process_alive(helper)

    again = _modelhost("up", "-d", "--port", "0", "--grpc-port", "0", home=home, cwd=tmp_path)
    assert again.returncode == 0, again.stderr + again.stdout
    _eventually(lambda: _gone(helper, helper_port), f"helper {helper} gone")
    # The service came back with a new replica (and helper), which `down` stops.
    client = PlatformClient(json.loads((home / "platform.json").read_text())["api"])
    replicas.update(_replicas(client))
    _eventually(lambda: len(_spawned(spawned)) == 2, "the new replica's helper")
    helpers = _spawned(spawned)
    down = _modelhost("down", home=home, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    for pid, port in [*replicas.items(), *helpers.items()]:
        gone = lambda pid=pid, port=port: _gone(pid, port)  # noqa: E731
        _eventually(gone, f"process {pid} gone, port {port} closed")


def _session_leader(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process in a session of its own that starts a child and waits, as a replica might."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess,sys; subprocess.run([sys.executable, '-c', "
            "'import time; time.sleep(60)'])",
        ],
        env={**os.environ, **env},
        start_new_session=True,
    )


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, once there is one."""
    found: list[int] = []

    def started() -> bool:
        found[:] = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (OSError, NotADirectoryError):
                continue
            if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        return bool(found)

    _eventually(started, f"a child of {pid}")
    return found


def test_the_reaper_kills_only_what_carries_a_dead_platforms_replica_id(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    ours = _session_leader({"MODELHOST_REPLICA_ID": "ours"})
    # Recorded under a pid that is now someone else's (it does not carry the id).
    stranger = _session_leader({"MODELHOST_REPLICA_ID": "a-stranger"})
    # Recorded by a platform that still runs (this very process).
    running = _session_leader({"MODELHOST_REPLICA_ID": "running"})
    processes = [ours, stranger, running]
    try:
        ours_child, stranger_child, running_child = (_children(p.pid)[0] for p in processes)
        dead_owner = _dead_pid()
        store.record_replica("ours", ours.pid, dead_owner, 1)
        store.record_replica("not-the-stranger", stranger.pid, dead_owner, 1)
        store.record_replica("running", running.pid, os.getpid(), start_ticks(os.getpid()) or 0)
        killed = reap_leftovers(store)
        assert sorted(killed) == sorted([ours.pid, ours_child])
        assert ours.wait(10) == -signal.SIGKILL
        assert not process_alive(ours_child)
        assert all(process_alive(pid) for pid in (stranger.pid, stranger_child, running.pid))
        assert process_alive(running_child)
        # The dead platform's records are crossed out; the running one's are kept.
        assert [r.id for r in store.replica_records()] == ["running"]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        store.close()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
