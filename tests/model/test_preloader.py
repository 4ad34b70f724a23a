"""Background loading of a repository: up to the budget, one load per model, failures kept."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from modelhost import Model, ModelRepository, errors
from modelhost.model.preloader import Preloader
from modelhost.model.repository import EVICTED, QUEUED, ModelState


class Numbered(Model):
    """A model that answers its own number; counts its loads and unloads."""

    def __init__(self, name: str, gate: threading.Event | None = None) -> None:
        super().__init__(name)
        self.gate = gate
        self.loads = 0
        self.unloads = 0

    def load(self) -> bool:
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the load's gate"
        self.loads += 1
        self.ready = True
        return True

    def unload(self) -> None:
        self.unloads += 1
        super().unload()

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"predictions": [int(self.name.removeprefix("m"))]}


def _repository(
    count: int, **limits: int
) -> tuple[ModelRepository, list[str], dict[str, list[Numbered]]]:
    names = [f"m{i:05d}" for i in range(count)]
    built: dict[str, list[Numbered]] = {}

    def loader(name: str) -> Model:
        model = Numbered(name)
        built.setdefault(name, []).append(model)
        return model

    repository = ModelRepository(loader, lambda: names, **limits)
    repository.defer_all(names)
    return repository, names, built


def test_it_fills_the_budget_in_order_and_evicts_nothing() -> None:
    repository, names, built = _repository(10_000, max_loaded_models=50)
    assert len(repository.index()) == 10_000  # all listed before any loads
    progress = Preloader(repository, names, threads=2).run()
    assert progress.done
    assert progress.loaded == 50
    assert progress.failed == 0
    assert sorted(repository.get_models()) == names[:50]
    assert all(m.unloads == 0 for models in built.values() for m in models)
    entry = {e.name: e for e in repository.index()}[names[-1]]
    assert (entry.state, entry.reason) == (ModelState.UNAVAILABLE, QUEUED)
    assert repository.is_deferred(names[-1])


def test_a_request_and_the_background_load_of_one_model_are_one_load() -> None:
    gate = threading.Event()
    built: list[Numbered] = []

    def loader(name: str) -> Model:
        model = Numbered(name, gate)
        built.append(model)
        return model

    repository = ModelRepository(loader, lambda: ["m00001"])
    repository.defer_all(["m00001"])
    preloader = Preloader(repository, ["m00001"])
    preloader.start()
    answers: list[Model] = []
    request = threading.Thread(target=lambda: answers.append(repository.ensure_loaded("m00001")))
    request.start()
    gate.set()
    request.join(10)
    assert preloader.join(10)
    assert len(built) == 1
    assert built[0].loads == 1
    assert answers == [built[0]]


def test_a_failed_load_stays_in_the_index_with_its_reason() -> None:
    class Broken(Model):
        def load(self) -> bool:
            raise OSError("weights missing")

    def loader(name: str) -> Model:
        return Broken(name) if name == "broken" else Numbered(name)

    repository = ModelRepository(loader, lambda: ["broken", "m00002"])
    repository.defer_all(["broken", "m00002"])
    progress = Preloader(repository, ["broken", "m00002"]).run()
    assert (progress.loaded, progress.failed) == (1, 1)
    entry = repository.index()[0]
    assert entry.name == "broken"
    assert entry.state == ModelState.UNAVAILABLE
    assert "weights missing" in entry.reason
    # Not deferred: a request answers at once (404, as an unloaded model) instead of
    # failing the same load again; an explicit load tries again.
    assert not repository.is_deferred("broken")
    with pytest.raises(errors.ModelNotFound):
        repository.acquire_loaded("broken")
    with pytest.raises(errors.ModelLoadError, match="weights missing"):
        repository.load("broken")


def test_nothing_loads_before_the_gate_opens_and_stop_ends_it() -> None:
    repository, names, _ = _repository(5)
    preloader = Preloader(repository, names)
    preloader.start(gate=lambda timeout: False)
    preloader.stop()
    assert preloader.join(10)
    assert repository.get_models() == {}
    assert preloader.progress().done


def test_unload_listeners_hear_evictions_and_unloads_but_not_reloads() -> None:
    repository, names, _ = _repository(3, max_loaded_models=1)
    heard: list[str] = []
    repository.add_unload_listener(heard.append)
    repository.load(names[0])
    repository.load(names[0])  # a reload swaps instances: the name is still served
    assert heard == []
    held = repository.acquire_loaded(names[1])  # evicts names[0]
    assert heard == [names[0]]
    repository.load(names[2])  # evicts names[1], which unloads when released
    assert heard == [names[0]]
    repository.release(held)
    assert heard == [names[0], names[1]]
    repository.unload(names[2])
    assert heard == [names[0], names[1], names[2]]


def test_eviction_and_reload_of_real_sklearn_models_under_concurrency(tmp_path: Path) -> None:
    """10,000 names over one tiny scikit-learn file, 30 loaded at most, 8 threads asking."""
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    from modelhost.runtimes.sklearn import SKLearnModel

    estimator = DecisionTreeClassifier(max_depth=2, random_state=0)
    estimator.fit([[0.0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]], [0, 1, 2])
    joblib.dump(estimator, tmp_path / "model.joblib")
    names = [f"m{i:05d}" for i in range(10_000)]
    repository = ModelRepository(
        lambda name: SKLearnModel(name, tmp_path), lambda: names, max_loaded_models=30
    )
    repository.defer_all(names)
    assert Preloader(repository, names).run().loaded == 30
    failures: list[str] = []

    def ask(seed: int) -> None:
        chosen = random.Random(seed)
        for _ in range(60):
            name = chosen.choice(names[:200])
            try:
                model = repository.acquire_loaded(name)
            except errors.ModelhostError as exc:
                failures.append(f"{name}: {exc}")
                continue
            try:
                answer = model.predict({"instances": [[2.0, 2, 2, 2]]})
                if model.name != name or answer != {"predictions": [2]}:
                    failures.append(f"{name} answered {answer} as {model.name}")
            finally:
                repository.release(model)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert len(repository.get_models()) <= 30
    evicted = [e for e in repository.index() if e.reason == EVICTED]
    assert evicted, "the budget of 30 never evicted a model"
    assert len(repository.index()) == 10_000


def test_a_byte_budget_stops_the_loader_when_full() -> None:
    names = [f"m{i:05d}" for i in range(100)]
    repository = ModelRepository(
        Numbered, lambda: names, max_loaded_bytes=1000, sizer=lambda model: 300
    )
    repository.defer_all(names)
    assert repository.has_room()
    progress = Preloader(repository, names).run()
    # 300 bytes each: the fourth crosses 1,000, so it loads and the loader stops after it;
    # had it gone on, the budget would evict the oldest while it loads the next.
    assert progress.loaded == 4
    assert not repository.has_room()
    assert len(repository.get_models()) == 3
    assert repository.is_deferred(names[0])


def test_on_done_is_called_once_when_every_thread_is_done() -> None:
    repository, names, _ = _repository(200, max_loaded_models=100)
    calls: list[int] = []
    preloader = Preloader(repository, names, threads=3, on_done=lambda: calls.append(1))
    progress = preloader.run()
    assert progress.done
    assert progress.loaded == 100
    assert calls == [1]
