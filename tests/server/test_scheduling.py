"""SCHED_BATCH for the event loop's thread and the model threads; gRPC's own threads untouched."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import StartServer

from modelhost import Model, ModelServer
from modelhost.server.scheduling import batch_this_thread
from modelhost.settings import ServerSettings, parse_known_server_args

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getscheduler"), reason="scheduling policies are Linux's"
)


class PolicyRecorder(Model):
    """Records the scheduling policy of the thread each predict runs on."""

    def __init__(self) -> None:
        super().__init__("policy")
        self.ready = True
        self.policies: list[int] = []

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        self.policies.append(os.sched_getscheduler(0))  # 0: the calling thread
        return {"predictions": [1]}


def _policy_of(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


def _grpc_core_thread_policies() -> list[int]:
    """The policies of the threads gRPC's core started (named by it)."""
    policies = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:  # gRPC's pool lets idle threads go: one may end while we look
            if (task / "comm").read_text().strip() in ("event_engine", "grpc_global_tim"):
                policies.append(os.sched_getscheduler(int(task.name)))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return policies


def test_loop_and_model_threads_run_batch_and_grpc_threads_do_not(serve: StartServer) -> None:
    model = PolicyRecorder()
    server = serve([model])
    response = httpx.post(f"{server.http_url}/v1/models/policy:predict", json={"instances": [1]})
    assert response.status_code == 200
    assert model.policies == [os.SCHED_BATCH]
    assert _policy_of(server.thread) == os.SCHED_BATCH
    grpc_policies = _grpc_core_thread_policies()
    assert grpc_policies, "gRPC's core started no threads of its own"
    assert all(policy == os.SCHED_OTHER for policy in grpc_policies)


def test_batch_scheduling_false_leaves_every_thread_as_it_was(serve: StartServer) -> None:
    model = PolicyRecorder()
    server = serve([model], batch_scheduling=False)
    response = httpx.post(f"{server.http_url}/v1/models/policy:predict", json={"instances": [1]})
    assert response.status_code == 200
    assert model.policies == [os.SCHED_OTHER]
    assert _policy_of(server.thread) == os.SCHED_OTHER


def test_the_thread_that_ran_serve_gets_its_policy_back() -> None:
    # A program that embeds serve() on a thread of its own keeps using that thread after.
    settings = ServerSettings(host="127.0.0.1", http_port=0, grpc_port=0)
    server = ModelServer(settings=settings)
    after: list[int] = []

    def run() -> None:
        asyncio.run(server.serve([PolicyRecorder()]))
        after.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=run)
    thread.start()
    assert server.wait_started(30)
    during = _policy_of(thread)
    server.stop()
    thread.join(30)
    assert (during, after) == (os.SCHED_BATCH, [os.SCHED_OTHER])


def test_batch_this_thread_changes_the_calling_thread_only() -> None:
    seen: list[int] = []

    def run() -> None:
        seen.append(int(batch_this_thread()))
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [1, os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_the_flag_and_the_environment_turn_it_off() -> None:
    assert ServerSettings().batch_scheduling is True
    assert parse_known_server_args(["--batch_scheduling", "false"]).batch_scheduling is False
    assert parse_known_server_args(["--batch-scheduling", "true"]).batch_scheduling is True
    env = {"MODELHOST_BATCH_SCHEDULING": "false"}
    assert ServerSettings.from_env(env).batch_scheduling is False


def test_batch_scheduling_false_moves_an_inherited_batch_thread_back() -> None:
    # A replica the platform's gateway started inherits its SCHED_BATCH; off means SCHED_OTHER.
    settings = ServerSettings(host="127.0.0.1", http_port=0, grpc_port=0, batch_scheduling=False)
    server = ModelServer(settings=settings)
    model = PolicyRecorder()
    after: list[int] = []

    def run() -> None:
        batch_this_thread()
        asyncio.run(server.serve([model]))
        after.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=run)
    thread.start()
    assert server.wait_started(30)
    try:
        during = _policy_of(thread)
        url = f"http://127.0.0.1:{server.http_port}/v1/models/policy:predict"
        response = httpx.post(url, json={"instances": [1]})
    finally:
        server.stop()
        thread.join(30)
    assert response.status_code == 200
    assert (during, model.policies, after) == (os.SCHED_OTHER, [os.SCHED_OTHER], [os.SCHED_BATCH])
