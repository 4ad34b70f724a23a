"""The ``ModelRepository``: which models a server holds, their state, load and unload.

KServe's names (``update``, ``get_model``, ``load``, ``unload``). Loading by name needs
a ``loader`` that builds a model from the repository folder; the runtimes layer
provides it, so this layer knows nothing of frameworks. All methods are synchronous
and may block: the server calls them off the event loop.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from modelhost import errors
from modelhost.model.model import Model

__all__ = ["ModelRepository", "ModelState", "RepositoryEntry"]

Loader = Callable[[str], Model]
Lister = Callable[[], list[str]]


class ModelState(str, enum.Enum):
    """States reported by the repository extension's index (Triton's names)."""

    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    state: ModelState
    reason: str = ""


class ModelRepository:
    """Holds models by name; loads and unloads them through an optional ``loader``."""

    def __init__(self, loader: Loader | None = None, lister: Lister | None = None) -> None:
        self._models: dict[str, Model] = {}
        # Unloaded instances, kept so that a repository without a loader can load them again.
        self._unloaded: dict[str, Model] = {}
        self._states: dict[str, tuple[ModelState, str]] = {}
        self._loader = loader
        self._lister = lister
        self._lock = threading.Lock()

    def update(self, model: Model) -> None:
        """Register (or replace) a model under its name."""
        with self._lock:
            self._models[model.name] = model
            self._states[model.name] = (
                (ModelState.READY, "") if model.ready else (ModelState.UNAVAILABLE, "not loaded")
            )

    def get_model(self, name: str) -> Model:
        """The model, ready or not; raises :class:`ModelNotFound`."""
        model = self._models.get(name)
        if model is None:
            raise errors.ModelNotFound(name)
        return model

    def get_ready_model(self, name: str) -> Model:
        model = self.get_model(name)
        if not model.ready:
            state, reason = self._states.get(name, (ModelState.UNAVAILABLE, ""))
            raise errors.ModelNotReady(name, reason if state != ModelState.READY else "")
        return model

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is known here, loaded or not."""
        return name in self._models or name in self._states

    def get_models(self) -> dict[str, Model]:
        return dict(self._models)

    def is_model_ready(self, name: str) -> bool:
        return self.get_model(name).ready

    def index(self) -> list[RepositoryEntry]:
        """Every model known, loaded or not (the repository extension's index)."""
        names = set(self._models) | set(self._states)
        if self._lister is not None:
            names |= set(self._lister())
        entries = []
        for name in sorted(names):
            state, reason = self._states.get(name, (ModelState.UNAVAILABLE, "not loaded"))
            entries.append(RepositoryEntry(name, state, reason))
        return entries

    def load(self, name: str) -> bool:
        """Load (or reload) ``name``; the old instance serves until the new one is ready."""
        old = self._models.get(name)
        if self._loader is None:
            model_or_none = old or self._unloaded.get(name)
            if model_or_none is None:
                raise errors.ModelNotFound(name)
            model = model_or_none
        else:
            if self._lister is not None and name not in self._lister() and old is None:
                raise errors.ModelNotFound(name)
            self._states[name] = (ModelState.LOADING, "")
            try:
                model = self._loader(name)
            except errors.ModelhostError as exc:
                self._states[name] = (ModelState.UNAVAILABLE, str(exc))
                raise
            except Exception as exc:
                self._states[name] = (ModelState.UNAVAILABLE, str(exc))
                raise errors.ModelLoadError(f"Failed to load model {name}: {exc}") from exc
        self._states[name] = (ModelState.LOADING, "")
        try:
            ready = model.ready or model.load()
            model.ready = bool(ready) or model.ready
        except Exception as exc:
            self._states[name] = (ModelState.UNAVAILABLE, str(exc))
            if isinstance(exc, errors.ModelhostError):
                raise
            raise errors.ModelLoadError(f"Failed to load model {name}: {exc}") from exc
        if not model.ready:
            self._states[name] = (ModelState.UNAVAILABLE, "load() did not make it ready")
            raise errors.ModelLoadError(f"Model {name} did not become ready on load.")
        with self._lock:
            self._models[name] = model
            self._unloaded.pop(name, None)
            self._states[name] = (ModelState.READY, "")
        if old is not None and old is not model:
            old.unload()
        return True

    def unload(self, name: str) -> None:
        """Stop serving ``name``; requests already running on it finish."""
        with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                raise errors.ModelNotFound(name)
            self._states[name] = (ModelState.UNAVAILABLE, "unloaded")
            self._unloaded[name] = model
        model.unload()
