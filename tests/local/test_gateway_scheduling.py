"""The gateway's event loop runs under SCHED_BATCH while the platform is up, and only then."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from platform_fixtures import RunningPlatform, start_platform, stop_platform

from modelhost.cli import build_parser

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getscheduler"), reason="scheduling policies are Linux's"
)


def _loop_policy(running: RunningPlatform) -> int:
    """The policy of the thread the platform's loop runs on, read on that thread."""

    async def probe() -> int:
        return os.sched_getscheduler(0)

    return asyncio.run_coroutine_threadsafe(probe(), running.loop).result(10)


@pytest.mark.parametrize(
    ("batch_scheduling", "expected"), [(True, os.SCHED_BATCH), (False, os.SCHED_OTHER)]
)
def test_the_loop_runs_batch_while_up_and_gets_its_policy_back(
    tmp_path: Path, batch_scheduling: bool, expected: int
) -> None:
    running = start_platform(tmp_path / "home", batch_scheduling=batch_scheduling)
    try:
        during = _loop_policy(running)
        asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop).result(60)
        after = _loop_policy(running)
    finally:
        stop_platform(running)
    assert (during, after) == (expected, os.SCHED_OTHER)


def test_the_flag_turns_it_off() -> None:
    assert build_parser().parse_args(["up"]).batch_scheduling is True
    assert build_parser().parse_args(["up", "--no-batch-scheduling"]).batch_scheduling is False
