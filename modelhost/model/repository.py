"""The ``ModelRepository``: which models a server holds, their state, load and unload.

KServe's names (``update``, ``get_model``, ``load``, ``unload``). Loading by name needs
a ``loader`` that builds a model from the repository folder; the runtimes layer
provides it, so this layer knows nothing of frameworks. All load and unload methods
are synchronous and may block: the server calls them off the event loop.

High-density serving (what ModelMesh does): with ``max_loaded_models`` or
``max_loaded_bytes`` set, loading a model past the budget *evicts* the least recently
used ones. An evicted model stays known and servable: the data plane loads it again on
its next request (:meth:`ensure_loaded`). Requests hold a model with :meth:`acquire` /
:meth:`release`, so a model evicted or unloaded while requests run on it is unloaded
only when the last of them is done: no request is lost to an unload.

Serving a large folder at once (``modelhost serve`` of a repository): every model is
known and deferred at start (:meth:`defer_all`), and a background loader fills the
budget with :meth:`preload` while requests load what they need first. A model's
unload tells the ``unload listeners`` (the server's metrics forget its label children),
so what the server keeps per model is bounded by the models loaded, not by those known.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelhost import errors
from modelhost.model.model import Model

__all__ = ["ModelRepository", "ModelState", "RepositoryEntry", "size_on_disk"]

logger = logging.getLogger("modelhost.model")

Loader = Callable[[str], Model]
Lister = Callable[[], list[str]]
Sizer = Callable[[Model], int]
UnloadListener = Callable[[str], None]

EVICTED = "evicted (least recently used); loads again on its next request"
NOT_LOADED = "not loaded"
QUEUED = "not loaded yet; loads in the background or on its first request"


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


def size_on_disk(model: Model) -> int:
    """Bytes of the files under the model's ``model_dir`` (0 when it has none).

    The budget's estimate of a model's memory: the weights on disk are what a runtime
    loads, and reading them costs nothing at load time.
    """
    folder = getattr(model, "model_dir", None)
    if folder is None:
        return 0
    path = Path(folder)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelRepository:
    """Holds models by name; loads and unloads them through an optional ``loader``."""

    def __init__(
        self,
        loader: Loader | None = None,
        lister: Lister | None = None,
        *,
        max_loaded_models: int = 0,
        max_loaded_bytes: int = 0,
        sizer: Sizer = size_on_disk,
    ) -> None:
        self._models: dict[str, Model] = {}
        # Unloaded instances, kept so that a repository without a loader can load them again.
        self._unloaded: dict[str, Model] = {}
        self._states: dict[str, tuple[ModelState, str]] = {}
        self._loader = loader
        self._lister = lister
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.RLock] = {}
        self.max_loaded_models = max_loaded_models
        self.max_loaded_bytes = max_loaded_bytes
        self._sizer = sizer
        self._sizes: dict[str, int] = {}
        self._loaded_bytes = 0
        self._evictions = 0
        self._unload_listeners: list[UnloadListener] = []
        # Ready models, least recently used first.
        self._recent: OrderedDict[str, None] = OrderedDict()
        # Known models that load on their next request (evicted, or past the budget at start).
        self._deferred: set[str] = set()
        # Requests running on a model instance, and instances waiting for them to unload.
        self._inflight: dict[int, int] = {}
        self._retired: dict[int, Model] = {}

    # -- registration and lookup ---------------------------------------------------

    def update(self, model: Model) -> None:
        """Register (or replace) a model under its name."""
        with self._lock:
            self._models[model.name] = model
            self._deferred.discard(model.name)
            if model.ready:
                self._states[model.name] = (ModelState.READY, "")
                self._recent[model.name] = None
            else:
                self._states[model.name] = (ModelState.UNAVAILABLE, NOT_LOADED)

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

    def is_deferred(self, name: str) -> bool:
        """Whether ``name`` is not loaded now but loads on its next request."""
        return name in self._deferred

    def instance(self, name: str) -> Model | None:
        """The model object known under ``name``, loaded or unloaded; None if none was built."""
        return self._models.get(name) or self._unloaded.get(name)

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
            state, reason = self._states.get(name, (ModelState.UNAVAILABLE, NOT_LOADED))
            entries.append(RepositoryEntry(name, state, reason))
        return entries

    # -- requests ------------------------------------------------------------------

    def acquire(self, name: str) -> Model:
        """The ready model, held for one request until :meth:`release`."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise errors.ModelNotFound(name)
            if not model.ready:
                state, reason = self._states.get(name, (ModelState.UNAVAILABLE, ""))
                raise errors.ModelNotReady(name, reason if state != ModelState.READY else "")
            key = id(model)
            self._inflight[key] = self._inflight.get(key, 0) + 1
            if name in self._recent:
                self._recent.move_to_end(name)
            return model

    def release(self, model: Model) -> None:
        """The request holding ``model`` is done; unloads it if it was retired meanwhile."""
        key = id(model)
        with self._lock:
            count = self._inflight.get(key, 0) - 1
            if count > 0:
                self._inflight[key] = count
                return
            self._inflight.pop(key, None)
            retired = self._retired.pop(key, None)
        if retired is not None:
            self._unload_instance(retired)

    def defer(self, name: str) -> None:
        """Leave ``name`` unloaded for now; it loads on its first request."""
        self.defer_all([name], NOT_LOADED)

    def defer_all(self, names: list[str], reason: str = QUEUED) -> None:
        """:meth:`defer` each of ``names`` (one lock for all: a folder of 10,000 at start)."""
        with self._lock:
            for name in names:
                if name not in self._models:
                    self._deferred.add(name)
                    self._states[name] = (ModelState.UNAVAILABLE, reason)

    def has_room(self) -> bool:
        """Whether one more model may load without evicting another (no budget: always).

        A byte budget cannot tell before a load whether the next model fits: once a load
        has evicted one, the budget is full.
        """
        with self._lock:
            if self.max_loaded_models > 0 and len(self._recent) >= self.max_loaded_models:
                return False
            if self.max_loaded_bytes <= 0:
                return True
            return self._evictions == 0 and self._loaded_bytes < self.max_loaded_bytes

    def preload(self, name: str) -> bool:
        """Load ``name`` if it is still deferred (the background loader's step).

        A request that loads it first makes this a no-op (one lock per name); a model
        that fails here stays in the index with its reason and is no longer deferred,
        so its requests answer at once instead of failing the same load again. True
        when this call loaded it.
        """
        with self._name_lock(name):
            if name not in self._deferred or name in self._models:
                return False
            try:
                self._load(name, hold=False)
            except errors.ModelhostError:
                with self._lock:
                    self._deferred.discard(name)
                raise
            return True

    def add_unload_listener(self, listener: UnloadListener) -> None:
        """Call ``listener(name)`` when a model's last instance unloads (evicted, unloaded).

        A reload that swaps instances does not count: the name is still served.
        """
        self._unload_listeners.append(listener)

    def ensure_loaded(self, name: str) -> Model:
        """The ready model, loading it first if it is deferred; one load per name at once."""
        model = self.acquire_loaded(name)
        self.release(model)
        return model

    def acquire_loaded(self, name: str) -> Model:
        """:meth:`acquire`, loading a deferred model first.

        The load and the hold are one step: another model's load cannot evict this one
        between them (it may evict it after, but a held model unloads only on release).
        """
        with self._name_lock(name):
            try:
                return self.acquire(name)
            except (errors.ModelNotFound, errors.ModelNotReady):
                if name not in self._deferred:
                    raise
            return self._load(name, hold=True)

    # -- load and unload -----------------------------------------------------------

    def load(self, name: str) -> bool:
        """Load (or reload) ``name``; the old instance serves until the new one is ready."""
        self._load(name, hold=False)
        return True

    def _load(self, name: str, hold: bool) -> Model:
        with self._name_lock(name):
            model, old = self._build(name)
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
            size = self._sizer(model) if self.max_loaded_bytes > 0 else 0
            with self._lock:
                self._models[name] = model
                self._unloaded.pop(name, None)
                self._deferred.discard(name)
                self._states[name] = (ModelState.READY, "")
                self._recent[name] = None
                self._recent.move_to_end(name)
                self._loaded_bytes += size - self._sizes.get(name, 0)
                self._sizes[name] = size
                if hold:
                    self._inflight[id(model)] = self._inflight.get(id(model), 0) + 1
                victims = self._over_budget(keep=name)
                if old is not None and old is not model:
                    replaced = self._retire(old)
                    if replaced is not None:
                        victims.append(replaced)
            for victim in victims:
                self._unload_instance(victim)
            return model

    def unload(self, name: str) -> None:
        """Stop serving ``name``; requests already running on it finish first."""
        with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                if name in self._deferred:
                    self._deferred.discard(name)
                    self._states[name] = (ModelState.UNAVAILABLE, "unloaded")
                    return
                raise errors.ModelNotFound(name)
            self._forget(name)
            self._states[name] = (ModelState.UNAVAILABLE, "unloaded")
            self._unloaded[name] = model
            model = self._retire(model)
        if model is not None:
            self._unload_instance(model)

    # -- internals -----------------------------------------------------------------

    def _name_lock(self, name: str) -> threading.RLock:
        with self._lock:
            lock = self._name_locks.get(name)
            if lock is None:
                lock = self._name_locks[name] = threading.RLock()
            return lock

    def _build(self, name: str) -> tuple[Model, Model | None]:
        old = self._models.get(name)
        if self._loader is None:
            model = old or self._unloaded.get(name)
            if model is None:
                raise errors.ModelNotFound(name)
            return model, old
        known = self._lister is None or old is not None or name in self._deferred
        if not known and self._lister is not None and name not in self._lister():
            raise errors.ModelNotFound(name)
        self._states[name] = (ModelState.LOADING, "")
        try:
            return self._loader(name), old
        except errors.ModelhostError as exc:
            self._states[name] = (ModelState.UNAVAILABLE, str(exc))
            raise
        except Exception as exc:
            self._states[name] = (ModelState.UNAVAILABLE, str(exc))
            raise errors.ModelLoadError(f"Failed to load model {name}: {exc}") from exc

    def _forget(self, name: str) -> None:
        self._recent.pop(name, None)
        self._loaded_bytes -= self._sizes.pop(name, 0)

    def _unload_instance(self, model: Model) -> None:
        """Unload a retired instance; tell the listeners when its name is no longer served."""
        model.unload()
        if self._models.get(model.name) is not None:
            return
        for listener in self._unload_listeners:
            try:
                listener(model.name)
            except Exception:
                logger.exception("An unload listener failed for model %s", model.name)

    def _retire(self, model: Model) -> Model | None:
        """``model`` to unload now, or None when requests still hold it (they unload it)."""
        key = id(model)
        if self._inflight.get(key, 0) > 0:
            self._retired[key] = model
            return None
        return model

    def _over_budget(self, keep: str) -> list[Model]:
        """Evict least recently used models until the budget holds; returns the ones to unload."""
        victims: list[Model] = []
        while self._exceeds_budget():
            name = next((n for n in self._recent if n != keep), None)
            if name is None:
                break
            model = self._models.pop(name)
            self._evictions += 1
            self._forget(name)
            self._deferred.add(name)
            self._unloaded[name] = model
            self._states[name] = (ModelState.UNAVAILABLE, EVICTED)
            retired = self._retire(model)
            if retired is not None:
                victims.append(retired)
        return victims

    def _exceeds_budget(self) -> bool:
        if self.max_loaded_models > 0 and len(self._recent) > self.max_loaded_models:
            return True
        return self.max_loaded_bytes > 0 and self._loaded_bytes > self.max_loaded_bytes
