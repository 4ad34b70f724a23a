"""``--workers N``: N processes share the ports, add up their metrics, and come back when killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import ServeProcess, serve_command

ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def wait_for(condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def predict_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"connection": "close"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "modelhost_requests_total"
                and sample.labels.get("endpoint") == "predict"
                and sample.labels.get("status") == "200"
            ):
                return sample.value
    return 0.0


def announced(pool: ServeProcess) -> int:
    return sum("HTTP on" in line for line in pool.lines)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ServeProcess]:
    model_dir = tmp_path / "iris"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_iris_model.py"), str(model_dir)],
        check=True,
    )
    served = ServeProcess(
        serve_command(str(model_dir), "--name", "iris", "--workers", "2"), cwd=tmp_path
    )
    yield served
    assert served.stop() == 0


def test_workers_share_ports_and_aggregate_metrics(pool: ServeProcess) -> None:
    wait_for(lambda: len(children(pool.process.pid)) == 2, "two workers")
    for _ in range(40):
        # A new connection each time, so that the kernel spreads them over the workers.
        response = httpx.post(
            f"{pool.url}/v1/models/iris:predict",
            json={"instances": [[6.8, 2.8, 4.8, 1.4]]},
            headers={"connection": "close"},
        )
        assert response.json() == {"predictions": [1]}
    for _ in range(6):  # whichever worker answers the scrape, it reports all 40
        assert predict_count(pool.url) == 40
    wait_for(lambda: announced(pool) >= 2, "both workers announced")
    assert announced(pool) == 2, "each worker announces itself once"


def test_a_killed_worker_is_replaced(pool: ServeProcess) -> None:
    wait_for(lambda: len(children(pool.process.pid)) == 2, "two workers")
    # Both must have announced themselves, or a victim killed while it loads would leave
    # one announcement short of the three awaited below.
    wait_for(lambda: announced(pool) == 2, "both workers announced")
    before = children(pool.process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(children(pool.process.pid)) == 2 and victim not in children(pool.process.pid),
        "a replacement worker",
    )
    wait_for(lambda: announced(pool) >= 3, "the new worker")
    for _ in range(10):
        response = httpx.post(
            f"{pool.url}/v1/models/iris:predict",
            json={"instances": [[6.8, 2.8, 4.8, 1.4]]},
            headers={"connection": "close"},
        )
        assert response.status_code == 200
    assert any("restarting" in line for line in pool.lines)
