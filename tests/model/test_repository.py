"""The ``ModelRepository``: register, load, reload, unload, and the index."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost import Model, ModelRepository, errors
from modelhost.model.repository import ModelState, size_on_disk


class Counting(Model):
    loads = 0

    def load(self) -> bool:
        Counting.loads += 1
        self.ready = True
        return True


class Broken(Model):
    def load(self) -> bool:
        raise OSError("weights missing")


def test_register_get_and_index() -> None:
    repository = ModelRepository()
    repository.update(Counting("a"))
    with pytest.raises(errors.ModelNotFound):
        repository.get_model("b")
    with pytest.raises(errors.ModelNotReady):
        repository.get_ready_model("a")
    assert repository.load("a")
    assert repository.get_ready_model("a").ready
    assert [(e.name, e.state) for e in repository.index()] == [("a", ModelState.READY)]


def test_unload_then_load_again_without_a_loader() -> None:
    repository = ModelRepository()
    model = Counting("a")
    repository.update(model)
    repository.load("a")
    repository.unload("a")
    assert not model.ready
    assert repository.index()[0].state == ModelState.UNAVAILABLE
    with pytest.raises(errors.ModelNotFound):
        repository.get_model("a")
    repository.load("a")
    assert repository.get_model("a") is model
    assert model.ready
    with pytest.raises(errors.ModelNotFound):
        repository.unload("zzz")


def test_loader_reload_swaps_instances_after_the_new_one_is_ready() -> None:
    built: list[Model] = []

    def loader(name: str) -> Model:
        model = Counting(name)
        built.append(model)
        return model

    repository = ModelRepository(loader=loader, lister=lambda: ["x"])
    repository.load("x")
    first = repository.get_model("x")
    repository.load("x")
    assert repository.get_model("x") is built[1]
    assert not first.ready  # the old instance was unloaded only after the swap
    with pytest.raises(errors.ModelNotFound):
        repository.load("not-listed")


def test_failed_load_reports_the_reason_in_the_index() -> None:
    repository = ModelRepository(loader=lambda name: Broken(name), lister=lambda: ["b"])
    with pytest.raises(errors.ModelLoadError, match="weights missing"):
        repository.load("b")
    entry = repository.index()[0]
    assert entry.state == ModelState.UNAVAILABLE
    assert "weights missing" in entry.reason


class Sized(Model):
    """A model whose size the test sets; counts its loads and unloads."""

    def __init__(self, name: str, size: int = 1) -> None:
        super().__init__(name)
        self.size = size
        self.loads = 0
        self.unloads = 0

    def load(self) -> bool:
        self.loads += 1
        self.ready = True
        return True

    def unload(self) -> None:
        self.unloads += 1
        super().unload()


def _sized_repository(**limits: int) -> tuple[ModelRepository, dict[str, list[Sized]]]:
    built: dict[str, list[Sized]] = {}
    sizes = {"a": 10, "b": 20, "c": 30}

    def loader(name: str) -> Model:
        model = Sized(name, sizes[name])
        built.setdefault(name, []).append(model)
        return model

    repository = ModelRepository(
        loader=loader,
        lister=lambda: sorted(sizes),
        sizer=lambda model: model.size,  # type: ignore[attr-defined]
        **limits,
    )
    return repository, built


def test_count_budget_evicts_the_least_recently_used() -> None:
    repository, built = _sized_repository(max_loaded_models=2)
    repository.load("a")
    repository.load("b")
    repository.release(repository.acquire("a"))  # a is now more recent than b
    repository.load("c")
    assert sorted(repository.get_models()) == ["a", "c"]
    assert built["b"][0].unloads == 1
    assert repository.is_deferred("b")
    entry = {e.name: e for e in repository.index()}["b"]
    assert entry.state == ModelState.UNAVAILABLE
    assert "evicted" in entry.reason
    # The next request for b loads it again, and evicts a (now the least recently used).
    model = repository.ensure_loaded("b")
    assert model.ready
    assert len(built["b"]) == 2
    assert sorted(repository.get_models()) == ["b", "c"]
    assert repository.is_deferred("a")


def test_byte_budget_evicts_until_it_fits() -> None:
    repository, _ = _sized_repository(max_loaded_bytes=45)
    repository.load("a")  # 10
    repository.load("b")  # 30
    repository.load("c")  # 60 > 45: a goes (30+20=50 still > 45), then b goes
    assert sorted(repository.get_models()) == ["c"]
    assert repository.is_deferred("a")
    assert repository.is_deferred("b")


def test_a_model_held_by_a_request_is_unloaded_only_when_it_is_released() -> None:
    repository, built = _sized_repository(max_loaded_models=1)
    repository.load("a")
    held = repository.acquire("a")
    repository.load("b")  # evicts a while a request still runs on it
    assert repository.is_deferred("a")
    assert held.ready
    assert built["a"][0].unloads == 0
    repository.release(held)
    assert built["a"][0].unloads == 1
    assert not held.ready


def test_explicit_unload_waits_for_running_requests_and_is_not_reloaded_on_request() -> None:
    repository, _built = _sized_repository()
    repository.load("a")
    held = repository.acquire("a")
    repository.unload("a")
    assert held.ready
    repository.release(held)
    assert not held.ready
    assert not repository.is_deferred("a")
    with pytest.raises(errors.ModelNotFound):
        repository.acquire("a")
    with pytest.raises(errors.ModelNotFound):
        repository.ensure_loaded("a")


def test_deferred_models_load_once_however_many_threads_ask() -> None:
    import threading

    repository, built = _sized_repository()
    repository.defer("a")
    assert repository.is_deferred("a")
    results: list[Model] = []
    threads = [
        threading.Thread(target=lambda: results.append(repository.ensure_loaded("a")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built["a"]) == 1
    assert all(model is built["a"][0] for model in results)


def test_reload_while_a_request_runs_unloads_the_old_instance_after_it() -> None:
    repository, built = _sized_repository()
    repository.load("a")
    held = repository.acquire("a")
    repository.load("a")
    assert repository.get_model("a") is built["a"][1]
    assert held.ready
    repository.release(held)
    assert not held.ready


def test_size_on_disk_counts_the_model_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub" / "more.bin").write_bytes(b"y" * 23)
    model = Model("m")
    assert size_on_disk(model) == 0
    model.model_dir = tmp_path  # type: ignore[attr-defined]
    assert size_on_disk(model) == 123
    model.model_dir = tmp_path / "weights.bin"  # type: ignore[attr-defined]
    assert size_on_disk(model) == 100
