"""Opt-in ``--inline_below_ms``: proven-fast sync steps run on the loop, slow ones never do."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from serving import StartServer
from testmodels import SlowModel

from modelhost import Model


class ThreadRecorder(Model):
    """Records which thread ran each predict; sleeps when told to."""

    def __init__(self, name: str = "recorder") -> None:
        super().__init__(name)
        self.ready = True
        self.threads: list[str] = []
        self.delay = 0.0

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        return {"predictions": [1]}


def predict(url: str, name: str) -> None:
    response = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": [1]}, timeout=30)
    assert response.status_code == 200


def test_fast_steps_move_inline_and_back_when_they_slow_down(serve: StartServer) -> None:
    model = ThreadRecorder()
    server = serve([model], enable_grpc=False, inline_below_ms=50)
    for _ in range(8):
        predict(server.http_url, "recorder")
    assert all(t.startswith("modelhost-model") for t in model.threads[:5]), model.threads
    assert model.threads[5:] == ["modelhost-test-server"] * 3  # the event loop's thread
    model.delay = 0.3  # one slow inline call lifts the moving mean past the limit
    predict(server.http_url, "recorder")
    model.delay = 0.0
    predict(server.http_url, "recorder")
    assert model.threads[-2] == "modelhost-test-server"
    assert model.threads[-1].startswith("modelhost-model")


def test_slow_steps_stay_off_the_loop(serve: StartServer) -> None:
    slow = SlowModel(delay=0.3)
    server = serve([slow], enable_grpc=False, inline_below_ms=50)
    for _ in range(6):  # past the warm-up: a slow step never proves fast
        predict(server.http_url, "slow")
    slow.delay = 2.0
    slow.started.clear()
    caller = threading.Thread(target=predict, args=(server.http_url, "slow"))
    caller.start()
    assert slow.started.wait(10)
    began = time.perf_counter()
    assert httpx.get(f"{server.http_url}/v2/health/live", timeout=5).status_code == 200
    assert time.perf_counter() - began < 1.0
    caller.join(30)
