"""A model repository folder: many models served by one server, one sub-folder each.

The layouts users bring from the other servers all work:

- ``<root>/<model>/<files>``: the model's files (any runtime, detected as for one model);
- ``<root>/<model>/<version>/<files>``: Triton's numbered versions; the highest is served
  and reported as the model's version;
- ``<root>/<model>/model-settings.json``: MLServer's per-model settings file: ``name``
  (serve under another name), ``implementation`` (``mlserver_sklearn.SKLearnModel`` and
  friends map to our runtimes, any other ``pkg.module.Class`` is a custom model),
  ``parameters.uri`` (a path relative to the folder, or a ``storageUri`` to fetch),
  ``parameters.version``, ``parameters.extra`` (runtime options), and batching. Ours
  adds ``runtime`` (a runtime name, as ``--runtime``).

The folder is read again on each ``names()`` and ``build()``, so models added or changed
on disk are found by the repository extension's index and load without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.model import Model
from modelhost.runtimes import detect, model_settings
from modelhost.runtimes._common import listing

__all__ = ["ModelFolder", "ModelSpec", "is_model_repository"]

Resolver = Callable[[str], Path]

# MLServer's runtime classes, by the module that holds them.
_MLSERVER_RUNTIMES = {
    "mlserver_sklearn": "sklearn",
    "mlserver_xgboost": "xgboost",
    "mlserver_lightgbm": "lightgbm",
    "mlserver_mlflow": "mlflow",
    "mlserver_huggingface": "huggingface",
    "mlserver_catboost": "catboost",
    "mlserver_onnx": "onnx",
}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the folder: where its files are and how to build it."""

    name: str
    folder: Path
    # The model's own folder, where its settings file is (``folder`` may be a version in it).
    home: Path
    uri: str | None = None
    version: str | None = None
    runtime: str | None = None
    model_class: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def is_model_repository(path: Path) -> bool:
    """Whether ``path`` is a folder of model folders rather than one model's folder."""
    if not path.is_dir():
        return False
    if (path / model_settings.FILE_NAME).is_file():
        return False
    if detect.matching_runtimes(listing(path)):
        return False
    return any(_model_folders(path))


class ModelFolder:
    """The models under ``root``; builds an unloaded ``Model`` for a name (the loader)."""

    def __init__(
        self,
        root: str | Path,
        options: Mapping[str, Any] | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.options = dict(options or {})
        # Turns a remote storageUri in a settings file into a local folder (storage layer).
        self.resolve = resolve

    def specs(self) -> dict[str, ModelSpec]:
        specs: dict[str, ModelSpec] = {}
        for folder in _model_folders(self.root):
            spec = self._spec(folder)
            if spec.name in specs:
                raise errors.ModelLoadError(
                    f"Two folders in {self.root} serve a model named {spec.name!r}: "
                    f"{specs[spec.name].folder.name} and {folder.name}."
                )
            specs[spec.name] = spec
        return specs

    def names(self) -> list[str]:
        """The lister: every model name the folder holds now."""
        return sorted(self.specs())

    def build(self, name: str) -> Model:
        """The loader: an unloaded model for ``name``; raises ModelNotFound."""
        spec = self.specs().get(name)
        if spec is None:
            raise errors.ModelNotFound(name)
        path = self._files_of(spec)
        options = {**self.options, **spec.options}
        model = detect.build_model(
            path, name, runtime=spec.runtime, model_class=spec.model_class, options=options
        )
        if spec.version is not None:
            model.version = spec.version  # type: ignore[attr-defined]
        if path != spec.home:
            batching = model_settings.read_batching(spec.home)
            if batching is not None:
                model.batching = batching
        return model

    def _files_of(self, spec: ModelSpec) -> Path:
        if spec.uri is None:
            return spec.folder
        if "://" in spec.uri:
            if self.resolve is None:
                raise errors.ModelLoadError(
                    f"Model {spec.name}: cannot fetch {spec.uri} without the storage layer."
                )
            return self.resolve(spec.uri)
        return (spec.folder / spec.uri).resolve()

    def _spec(self, folder: Path) -> ModelSpec:
        settings = _read_settings(folder)
        parameters = settings.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise errors.ModelLoadError(f"{folder}: 'parameters' must be an object.")
        name = str(settings.get("name") or folder.name)
        version = parameters.get("version")
        files = folder
        versions = _numbered_versions(folder)
        if versions and parameters.get("uri") is None:
            number, files = versions[-1]
            version = version if version is not None else str(number)
        runtime, model_class = _implementation(settings)
        extra = parameters.get("extra") or {}
        if not isinstance(extra, dict):
            raise errors.ModelLoadError(f"{folder}: 'parameters.extra' must be an object.")
        return ModelSpec(
            name=name,
            folder=files,
            home=folder,
            uri=parameters.get("uri"),
            version=None if version is None else str(version),
            runtime=runtime,
            model_class=model_class,
            options=extra,
        )


def _model_folders(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "__pycache__"
    )


def _numbered_versions(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.name), p) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _read_settings(folder: Path) -> dict[str, Any]:
    path = folder / model_settings.FILE_NAME
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise errors.ModelLoadError(f"Cannot read {path}: {exc}") from None
    if not isinstance(settings, dict):
        raise errors.ModelLoadError(f"{path} must hold a JSON object.")
    return settings


def _implementation(settings: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(runtime, model_class) from ``runtime`` or MLServer's ``implementation``."""
    runtime = settings.get("runtime")
    if runtime:
        return str(runtime), None
    implementation = settings.get("implementation")
    if not implementation:
        return None, None
    module, _, cls = str(implementation).rpartition(".")
    known = _MLSERVER_RUNTIMES.get(module.split(".")[0])
    if known is not None:
        return known, None
    if not module:
        raise errors.ModelLoadError(
            f"implementation {implementation!r} must be a dotted path, pkg.module.Class."
        )
    return None, f"{module}:{cls}"
