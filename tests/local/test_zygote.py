"""Replicas forked from the zygote serve exactly as spawned ones, and never outlive the platform.

Real processes throughout: a zygote that has imported the tabular runtimes, replicas forked
from it and spawned beside them, on loopback ports; a platform that scales an iris model
from zero through a forked replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc
import joblib
import pytest
import uvloop
from platform_fixtures import process_alive, start_platform, stop_platform
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelhost.local.replica import Replica, free_port, local_argv
from modelhost.local.settings import PlatformSettings
from modelhost.local.zygote import Zygote
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the zygote forks; the parent-death signal"
)

T = TypeVar("T")
ROW = [6.8, 2.8, 4.8, 1.4]
# Enough for the server's own path: the tests of failures need no framework preloaded.
LIGHT_PRELOAD = ("modelhost.server.model_server",)


class Loop:
    """An event loop in a thread of its own (uvloop, as the platform runs), for the zygote."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 90) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def zygote(loop: Loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    """The platform's zygote, with its real (tabular) preload."""
    started = Zygote(tmp_path_factory.mktemp("zygote"), _base_env())
    loop.run(started.start())
    assert loop.run(started.wait_ready()), (started.log_path.read_text(), "did not start")
    yield started
    loop.run(started.stop())


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``iris/model.joblib``: replicas run there, with a relative model_dir."""
    folder = tmp_path_factory.mktemp("work")
    (folder / "iris").mkdir()
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), folder / "iris" / "model.joblib")
    return folder


def _base_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _replica(
    folder: Path,
    zygote: Zygote | None,
    name: str,
    model_dir: str = "iris",
    runtime: str = "sklearn",
    **env: str,
) -> Replica:
    http_port, grpc_port = free_port(), free_port()
    argv = [
        "modelhost",
        "serve",
        "--model_name=iris",
        f"--model_dir={model_dir}",
        f"--runtime={runtime}",
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
    ]
    return Replica(
        name,
        local_argv(argv),
        {**_base_env(), **env},
        http_port=http_port,
        grpc_port=grpc_port,
        log_path=folder / "logs" / f"{name}.log",
        cwd=str(folder),
        zygote=zygote,
    )


async def _start(replica: Replica) -> bool:
    await replica.start()
    async with aiohttp.ClientSession() as session:
        return await replica.wait_ready(session, 60)


async def _answers(replica: Replica) -> dict[str, Any]:
    """What a client sees of a replica: v1, v2 and gRPC answers, metadata, metric names."""
    base = f"http://{replica.http_address}"
    seen: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/v1/models/iris:predict", json={"instances": [ROW, ROW]}
        ) as response:
            seen["v1"] = (response.status, await response.json())
        v2_request = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
        async with session.post(f"{base}/v2/models/iris/infer", json=v2_request) as response:
            body = await response.json()
            seen["v2"] = (response.status, body["outputs"], body["model_name"])
        async with session.get(f"{base}/v2") as response:
            seen["server"] = (await response.json())["name"]
        async with session.get(f"{base}/v2/models/iris") as response:
            seen["metadata"] = await response.json()
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
            seen["metrics"] = sorted(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    async with grpc.aio.insecure_channel(replica.grpc_address) as channel:
        request = pb.ModelInferRequest(model_name="iris")
        tensor = request.inputs.add(name="x", datatype="FP64", shape=[1, 4])
        tensor.contents.fp64_contents.extend(ROW)
        reply = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        seen["grpc"] = [
            (o.name, o.datatype, list(o.shape), list(o.contents.int64_contents))
            for o in reply.outputs
        ]
    return seen


def _cwd(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/cwd")


def test_a_forked_replica_serves_exactly_as_a_spawned_one(
    loop: Loop, zygote: Zygote, model_folder: Path
) -> None:
    forked = _replica(model_folder, zygote, "forked", MODELHOST_SERVER_NAME="replica-env")
    spawned = _replica(model_folder, None, "spawned", MODELHOST_SERVER_NAME="replica-env")
    try:
        assert loop.run(_start(forked)), forked.log_path.read_text()
        assert loop.run(_start(spawned)), spawned.log_path.read_text()
        assert forked.forked
        assert not spawned.forked
        assert forked.pid is not None
        assert spawned.pid is not None
        # A session of its own (stopping it stops what it spawns), in the folder it was given.
        assert os.getsid(forked.pid) == forked.pid
        assert _cwd(forked.pid) == _cwd(spawned.pid) == str(model_folder)
        forked_answers = loop.run(_answers(forked))
        spawned_answers = loop.run(_answers(spawned))
        assert forked_answers == spawned_answers
        assert forked_answers["v1"] == (200, {"predictions": [1, 1]})
        assert forked_answers["grpc"][0][3] == [1]
        # The environment it was given, not the zygote's: the server's name comes from it.
        assert forked_answers["server"] == "replica-env"
        assert forked_answers["metrics"]  # the same names, as compared above
    finally:
        loop.run(forked.stop(5))
        loop.run(spawned.stop(5))
    # SIGTERM drains, and the exit code comes back as a spawned replica's does.
    assert forked.returncode == spawned.returncode == 0
    log = forked.log_path.read_text()
    assert f"Started server process [{forked.pid}]" in log
    assert "modelhost serving iris" in log
    assert "Draining in-flight requests" in log
    assert "modelhost stopped" in log


def test_exit_codes_are_reported_as_a_spawned_replicas(
    loop: Loop, zygote: Zygote, model_folder: Path
) -> None:
    forked = _replica(model_folder, zygote, "missing-forked", model_dir="no-such-folder")
    spawned = _replica(model_folder, None, "missing-spawned", model_dir="no-such-folder")
    assert not loop.run(_start(forked))
    assert not loop.run(_start(spawned))
    assert forked.forked
    assert loop.run(forked.wait_exit()) == loop.run(spawned.wait_exit()) == 1
    assert "no-such-folder" in forked.log_path.read_text()

    killed = _replica(model_folder, zygote, "killed")
    assert loop.run(_start(killed))
    killed.kill_now()
    assert loop.run(killed.wait_exit()) == -signal.SIGKILL


def test_only_a_local_tabular_serve_with_the_same_import_environment_is_forked(
    zygote: Zygote,
) -> None:
    serve = local_argv(["modelhost", "serve", "--runtime=sklearn", "--model_dir=m"])
    env = _base_env()
    assert zygote.accepts(serve, env)
    assert zygote.accepts(local_argv(["modelhost", "serve", "--runtime", "xgboost"]), env)
    assert not zygote.accepts(local_argv(["modelhost", "serve", "--runtime=pytorch"]), env)
    assert not zygote.accepts(local_argv(["modelhost", "serve", "--model_dir=m"]), env)
    assert not zygote.accepts(local_argv(["python", "app.py", "--runtime=sklearn"]), env)
    assert not zygote.accepts(["/usr/bin/modelhost", "serve", "--runtime=sklearn"], env)
    # Read when numpy loaded: a replica that sets it otherwise must import afresh.
    assert not zygote.accepts(serve, {**env, "OMP_NUM_THREADS": "3"})


def test_a_replica_whose_zygote_died_is_spawned_its_forked_ones_go_and_it_comes_back(
    loop: Loop, model_folder: Path, tmp_path: Path
) -> None:
    zygote = Zygote(tmp_path, _base_env(), preload=LIGHT_PRELOAD, revive_after_s=0.0)
    loop.run(zygote.start())
    try:
        assert loop.run(zygote.wait_ready())
        forked = _replica(model_folder, zygote, "before")
        assert loop.run(_start(forked))
        assert forked.forked
        assert zygote.pid is not None
        os.kill(zygote.pid, signal.SIGKILL)
        # Its replicas die with it (the kernel's parent-death signal), and are reported so.
        assert loop.run(forked.wait_exit()) == -signal.SIGKILL
        _eventually(lambda: not zygote.running, "the platform sees the zygote gone")
        after = _replica(model_folder, zygote, "after")
        try:
            assert loop.run(_start(after)), after.log_path.read_text()
            assert not after.forked
            assert loop.run(_answers(after))["v1"] == (200, {"predictions": [1, 1]})
        finally:
            loop.run(after.stop(5))
        assert after.returncode == 0
        # The replica that found it gone had it started again: the next one forks.
        assert loop.run(zygote.wait_ready())
        again = _replica(model_folder, zygote, "again")
        try:
            assert loop.run(_start(again)), again.log_path.read_text()
            assert again.forked
        finally:
            loop.run(again.stop(5))
    finally:
        loop.run(zygote.stop())


OWNER = """
import asyncio, json, os, sys
from pathlib import Path
from modelhost.local.replica import Replica, free_port, local_argv
from modelhost.local.zygote import Zygote

async def main():
    folder = Path(sys.argv[1])
    zygote = Zygote(folder, {**os.environ, "PYTHONUNBUFFERED": "1"}, preload=%(preload)r)
    await zygote.start()
    assert await zygote.wait_ready()
    port = free_port()
    argv = ["modelhost", "serve", "--model_dir=iris", "--runtime=sklearn",
            f"--http_port={port}", f"--grpc_port={free_port()}"]
    replica = Replica("r", local_argv(argv), {**os.environ, "PYTHONUNBUFFERED": "1"},
                      http_port=port, grpc_port=0, log_path=folder / "r.log",
                      cwd=sys.argv[2], zygote=zygote)
    await replica.start()
    print(json.dumps({"zygote": zygote.pid, "replica": replica.pid, "forked": replica.forked}),
          flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def test_forked_replicas_die_with_the_platform(model_folder: Path, tmp_path: Path) -> None:
    """A platform killed at once (SIGKILL) takes its zygote and the replicas forked with it."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(OWNER % {"preload": LIGHT_PRELOAD}),
            str(tmp_path),
            str(model_folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline())
        assert started["forked"]
        assert process_alive(started["zygote"])
        assert process_alive(started["replica"])
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    _eventually(lambda: not process_alive(started["zygote"]), "the zygote gone")
    _eventually(lambda: not process_alive(started["replica"]), "the forked replica gone")


def test_the_first_request_after_scale_to_zero_is_answered_by_a_forked_replica(
    tmp_path: Path, sample_buckets: Any
) -> None:
    env = {**sample_buckets.env(), "MODELHOST_CACHE_DIR": str(tmp_path / "cache")}
    platform = start_platform(
        tmp_path / "home",
        replica_env=env,
        stable_window_s=0.5,
        scale_to_zero_grace_period_s=0.2,
    )
    try:
        zygote = platform.server.platform.zygote
        assert zygote is not None
        assert platform.call(zygote.wait_ready())
        sample = Path(__file__).parents[1] / "control" / "samples" / "sklearn-iris-v1.yaml"
        text = sample.read_text().replace("  predictor:\n", "  predictor:\n    minReplicas: 0\n")
        platform.apply(text)
        platform.wait_ready("sklearn-iris", timeout=60)
        _eventually(lambda: _replica_rows(platform) == [], "scaled to zero", timeout=30)
        started = time.monotonic()
        request = {"instances": [ROW]}
        answer = _post(platform.url, "/v1/models/sklearn-iris:predict", request)
        elapsed = time.monotonic() - started
        assert answer == {"predictions": [1]}
        runner = _runner(platform)
        assert runner.cold_starts == 1
        assert all(r.forked for r in runner.replicas), "the replica was spawned"
        # Not a timing test (a loaded test machine), but far from a spawn's seconds.
        assert elapsed < 30
    finally:
        stop_platform(platform)


def test_the_setting_turns_the_zygote_off(tmp_path: Path) -> None:
    assert PlatformSettings(home=tmp_path).zygote
    from modelhost.cli import build_parser

    assert build_parser().parse_args(["up"]).zygote
    assert not build_parser().parse_args(["up", "--no-zygote"]).zygote


def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    import urllib.request

    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Host": "sklearn-iris.default.example.com", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _runner(platform: Any) -> Any:
    service = platform.server.platform.reconciler.service("default", "sklearn-iris")
    (runner,) = service.components["predictor"].runners.values()
    return runner


def _replica_rows(platform: Any) -> list[Any]:
    return [r for row in platform.revisions("sklearn-iris") for r in row["replicas"]]


def _eventually(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)


def test_the_ready_pipe_is_closed_once(loop: Loop, tmp_path: Path) -> None:
    """The number the ready pipe had, reused the moment it is free, stays open.

    uvloop closes a pipe transport's descriptor a loop turn after ``close()``; a file object
    over the same descriptor closed it at once, so the number came free twice, and the
    second close hit whatever took it in between (CI saw a control connection accepted
    under it fail with ``EBADF`` in uvicorn's ``connection_made``). Here a pipe is opened as
    the "ready" line is logged, right after the close, and must still be open later.
    """
    zygote = Zygote(tmp_path, _base_env(), preload=LIGHT_PRELOAD)
    taken: list[int] = []

    class TakeTheNumber(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "zygote ready" in record.getMessage():
                taken.extend(os.pipe())

    handler = TakeTheNumber()
    local_logger = logging.getLogger("modelhost.local")
    level = local_logger.level
    local_logger.setLevel(logging.INFO)
    local_logger.addHandler(handler)

    async def scenario() -> None:
        await zygote.start()
        try:
            assert await zygote.wait_ready(), zygote.log_path.read_text()
            for _ in range(50):
                await asyncio.sleep(0)
        finally:
            await zygote.stop()

    try:
        loop.run(scenario())
        assert len(taken) == 2
        for fd in taken:
            os.fstat(fd)  # EBADF if something closed it
    finally:
        local_logger.removeHandler(handler)
        local_logger.setLevel(level)
        for fd in taken:
            with contextlib.suppress(OSError):
                os.close(fd)
