"""A server of 10,000 models: listed at once, loaded on demand, no request lost, metrics bounded."""

from __future__ import annotations

import random
import threading
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serving import StartServer

from modelhost import Model, ModelRepository
from modelhost.model.preloader import Preloader
from modelhost.server.metrics import Metrics

COUNT = 10_000


class Numbered(Model):
    """Cheap to load; answers its own number, so that a reply names the model it came from."""

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"predictions": [int(self.name.removeprefix("m"))]}


def _names() -> list[str]:
    return [f"m{i:05d}" for i in range(COUNT)]


def _repository(names: list[str], max_loaded_models: int) -> ModelRepository:
    repository = ModelRepository(Numbered, lambda: names, max_loaded_models=max_loaded_models)
    repository.defer_all(names)
    return repository


def _model_labels(text: str) -> set[str]:
    return {
        sample.labels.get("model") or sample.labels.get("model_name") or ""
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    } - {""}


def test_listed_at_once_and_a_model_not_loaded_yet_answers(serve: StartServer) -> None:
    names = _names()
    repository = _repository(names, 0)
    shut = threading.Event()
    preloader = Preloader(repository, names)
    preloader.start(gate=shut.wait)  # the gate stays shut: nothing loads in the background
    try:
        running = serve([], repository)
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            index = client.post("/v2/repository/index", json={}).json()
            assert len(index) == COUNT
            assert {e["state"] for e in index} == {"UNAVAILABLE"}
            assert client.get("/v2/health/ready").status_code == 200
            assert client.get("/v2/models/m04321/ready").status_code == 200
            reply = client.post("/v1/models/m04321:predict", json={"instances": [[1]]})
            assert reply.status_code == 200
            assert reply.json() == {"predictions": [4321]}
        assert list(repository.get_models()) == ["m04321"]
    finally:
        preloader.stop()
        assert preloader.join(10)


def test_eviction_and_reload_under_concurrency_lose_no_request(serve: StartServer) -> None:
    names = _names()
    repository = _repository(names, 20)
    running = serve([], repository)
    failures: list[str] = []
    answered = [0]

    def client_thread(seed: int) -> None:
        chosen = random.Random(seed)
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            for _ in range(40):
                # Half the calls to a few hot models, half to any of the 10,000.
                number = chosen.randrange(10) if chosen.random() < 0.5 else chosen.randrange(COUNT)
                body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
                reply = client.post(f"/v2/models/m{number:05d}/infer", json=body)
                if reply.status_code != 200:
                    failures.append(f"m{number:05d}: {reply.status_code} {reply.text}")
                elif reply.json()["outputs"][0]["data"] != [number]:
                    failures.append(f"m{number:05d} answered {reply.json()}")
                else:
                    answered[0] += 1

    threads = [threading.Thread(target=client_thread, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert answered[0] == 8 * 40
    assert len(repository.get_models()) <= 20
    # Metric children follow the loaded models: those of evicted ones are gone.
    with httpx.Client(base_url=running.http_url, timeout=30) as client:
        labels = _model_labels(client.get("/metrics").text)
    assert labels, "no per-model metric was exported"
    # A model evicted while a request held it may be observed once more after it went:
    # at most one such stray per client thread.
    assert len(labels - set(repository.get_models())) <= 8


def test_metric_children_of_10000_models_stay_bounded_by_the_loaded_ones() -> None:
    metrics = Metrics()
    loaded: list[str] = []
    for name in _names():
        metrics.observe_request(name, "v2", "infer", 200, 0.001)
        metrics.observe_step("predict", name, 0.0005)
        metrics.batch_size(name).observe(1)
        loaded.append(name)
        if len(loaded) > 100:
            metrics.forget_model(loaded.pop(0))
    # requests, request_duration, predict and batch_size: four children per loaded model.
    assert metrics.model_label_children() == 4 * 100
    assert _model_labels(metrics.exposition(None)[0].decode()) == set(loaded)
