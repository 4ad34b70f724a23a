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

The listing is cached and read again when the root folder changes (a sub-folder added,
removed or renamed), so models added on disk are found by the repository extension's
index and load without a restart; ``build()`` reads the one model's folder afresh, so a
changed settings file counts from the model's next load. One name costs one folder read,
not a scan of all of them: a folder of 10,000 models lists and loads in linear time.
"""

from __future__ import annotations

import json
import os
import threading
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
        # The last scan and the root's stat it was made under (see ``_root_key``).
        self._specs: dict[str, ModelSpec] = {}
        self._names: list[str] = []
        self._specs_key: tuple[int, ...] | None = None
        self._scan_lock = threading.Lock()

    def specs(self) -> dict[str, ModelSpec]:
        """Every model of the folder by name; scanned again only when the root changed."""
        self._refresh()
        return dict(self._specs)

    def names(self) -> list[str]:
        """The lister: every model name the folder holds now."""
        self._refresh()
        return list(self._names)

    def _refresh(self) -> None:
        with self._scan_lock:
            key = _root_key(self.root)
            if key != self._specs_key:
                # The key is taken before the scan: a folder added during the scan changes
                # the key again, so the next call scans again rather than miss it.
                self._specs = self._scan()
                self._names = sorted(self._specs)
                self._specs_key = key

    def spec(self, name: str) -> ModelSpec:
        """The spec of one model; raises ModelNotFound.

        The folder named ``name`` is read afresh (its settings may have changed); a model
        renamed by its settings file is found through the listing.
        """
        folder = self.root / name
        if _is_model_folder(folder):
            spec = self._spec(folder)
            if spec.name == name:
                return spec
        self._refresh()
        listed = self._specs.get(name)
        if listed is None or not listed.home.is_dir():
            raise errors.ModelNotFound(name)
        spec = self._spec(listed.home)
        if spec.name != name:  # renamed again since the listing
            raise errors.ModelNotFound(name)
        return spec

    def _scan(self) -> dict[str, ModelSpec]:
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

    def build(self, name: str) -> Model:
        """The loader: an unloaded model for ``name``; raises ModelNotFound."""
        spec = self.spec(name)
        path = self._files_of(spec)
        options = {**self.options, **spec.options}
        model = detect.build_model(
            path, name, runtime=spec.runtime, model_class=spec.model_class, options=options
        )
        if spec.version is not None:
            model.version = spec.version  # type: ignore[attr-defined]
        # build_model read the settings of the model's folder, or of the file's folder: the
        # model's own are read here when they are elsewhere (a version folder, a uri).
        beside = path.parent == spec.home and path.is_file()
        if path != spec.home and not beside:
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
        # With a uri the folder's versions are not served: no need to list it (a listing
        # costs ~0.1 ms a folder here, the most of a 10,000-model scan).
        versions = _numbered_versions(folder) if parameters.get("uri") is None else []
        if versions:
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
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if _is_model_name(e.name) and e.is_dir())
    return [root / name for name in names]


def _is_model_name(name: str) -> bool:
    return bool(name) and not name.startswith((".", "_")) and "/" not in name


def _is_model_folder(path: Path) -> bool:
    return _is_model_name(path.name) and path.is_dir()


def _root_key(root: Path) -> tuple[int, ...]:
    """What changes when a sub-folder of ``root`` is added, removed or renamed.

    The mtime alone can miss a change made within the file system's timestamp tick; the
    link count (one per sub-folder on POSIX file systems) and the inode catch most of those.
    """
    stat = root.stat()
    return (stat.st_ino, stat.st_mtime_ns, stat.st_nlink, stat.st_ctime_ns)


def _numbered_versions(folder: Path) -> list[tuple[int, Path]]:
    with os.scandir(folder) as entries:
        numbers = sorted(
            int(e.name) for e in entries if e.name.isascii() and e.name.isdigit() and e.is_dir()
        )
    return [(number, folder / str(number)) for number in numbers]


def _read_settings(folder: Path) -> dict[str, Any]:
    path = folder / model_settings.FILE_NAME
    try:
        with open(path, "rb") as file:  # no stat first: one system call less a folder
            text = file.read()
    except (FileNotFoundError, IsADirectoryError):
        return {}
    except OSError as exc:
        raise errors.ModelLoadError(f"Cannot read {path}: {exc}") from None
    try:
        settings = json.loads(text)
    except ValueError as exc:
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
