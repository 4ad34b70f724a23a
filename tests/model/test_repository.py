"""The ``ModelRepository``: register, load, reload, unload, and the index."""

from __future__ import annotations

import pytest

from modelhost import Model, ModelRepository, errors
from modelhost.model.repository import ModelState


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
