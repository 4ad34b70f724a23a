"""The custom runtime: a user's class named as ``module:Class``, and every way to get it wrong."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost import errors
from modelhost.model.model import Model
from modelhost.runtimes import build_model
from modelhost.runtimes.custom import build_custom_model, load_model_class

WriteModule = Callable[[Path, str], str]

MODEL_SOURCE = """
from modelhost.model.model import Model


class Doubler(Model):
    def __init__(self, name, model_dir=None, factor=2):
        super().__init__(name)
        self.model_dir = model_dir
        self.factor = factor

    def load(self):
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        return {"predictions": [v * self.factor for v in payload["instances"]]}


class DuckTyped:
    def __init__(self, name):
        self.name = name
        self.ready = False

    def load(self):
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        return {"predictions": payload["instances"]}


class NotAModel:
    def __init__(self, name):
        self.name = name


class Broken(Model):
    def __init__(self, name):
        raise RuntimeError("no weights here")


def helper():
    return 1
"""


@pytest.fixture
def write_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Writes a module with a fresh name; sys.path and sys.modules are restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    written: list[str] = []

    def write(folder: Path, source: str) -> str:
        name = f"custom_model_{uuid.uuid4().hex}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_loads_a_model_class_from_the_model_dir(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    model = build_model(tmp_path, "double", model_class=f"{module}:Doubler")
    assert isinstance(model, Model)
    assert model.name == "double"
    assert model.model_dir == str(tmp_path)  # type: ignore[attr-defined]
    assert str(tmp_path) in sys.path
    assert model.load()
    assert model.predict({"instances": [1, 2]}) == {"predictions": [2, 4]}


def test_options_named_in_init_are_passed(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    model = build_model(
        tmp_path, "m", model_class=f"{module}:Doubler", options={"factor": 3, "nthread": 4}
    )
    assert model.factor == 3  # type: ignore[attr-defined]


def test_a_duck_typed_class_is_accepted(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    model = build_model(tmp_path, "duck", runtime="custom", model_class=f"{module}:DuckTyped")
    assert model.load()
    assert model.predict({"instances": [5]}) == {"predictions": [5]}


def test_an_importable_module_needs_no_model_dir() -> None:
    cls = load_model_class("modelhost.model.model:Model")
    assert cls is Model
    model = build_custom_model("plain", None, "modelhost.model.model:Model")
    assert type(model) is Model


@pytest.mark.parametrize("spec", ["nocolon", "mod:", ":Cls", "1bad:Cls", "a:b:c", "mod.:Cls"])
def test_bad_spec(tmp_path: Path, spec: str) -> None:
    with pytest.raises(errors.ModelLoadError, match=r"expected 'pkg\.module:Class'"):
        build_model(tmp_path, "m", model_class=spec)


def test_missing_module(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match="not installed, and not in") as info:
        build_model(tmp_path, "m", model_class="no_such_module_here:Model")
    assert str(tmp_path) in str(info.value)


def test_missing_class_lists_the_model_classes(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    with pytest.raises(errors.ModelLoadError, match=r"no 'Tripler'.*Doubler, DuckTyped"):
        build_model(tmp_path, "m", model_class=f"{module}:Tripler")


def test_not_a_class(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    with pytest.raises(errors.ModelLoadError, match="is a function, not a class"):
        build_model(tmp_path, "m", model_class=f"{module}:helper")


def test_not_a_model(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    with pytest.raises(errors.ModelLoadError, match="is not a model"):
        build_model(tmp_path, "m", model_class=f"{module}:NotAModel")


def test_constructor_failure(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    with pytest.raises(errors.ModelLoadError, match="RuntimeError: no weights here"):
        build_model(tmp_path, "m", model_class=f"{module}:Broken")


def test_a_missing_dependency_is_named_not_the_module(
    tmp_path: Path, write_module: WriteModule
) -> None:
    module = write_module(tmp_path, "import a_dependency_nobody_has\n")
    with pytest.raises(errors.ModelLoadError, match="a_dependency_nobody_has") as info:
        build_model(tmp_path, "m", model_class=f"{module}:Model")
    assert "not installed, and not in" not in str(info.value)


def test_a_module_that_fails_to_import(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, "raise ValueError('half written')\n")
    with pytest.raises(errors.ModelLoadError, match="ValueError: half written"):
        build_model(tmp_path, "m", model_class=f"{module}:Model")


def test_model_class_conflicts_with_another_runtime(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match="custom model"):
        build_model(tmp_path, "m", runtime="sklearn", model_class="mod:Cls")


def test_a_file_path_puts_its_folder_on_sys_path(tmp_path: Path, write_module: WriteModule) -> None:
    module = write_module(tmp_path, MODEL_SOURCE)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0")
    model: Any = build_model(weights, "m", model_class=f"{module}:Doubler")
    assert model.model_dir == str(weights)
