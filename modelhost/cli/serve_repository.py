"""``modelhost serve <repository folder>``: many models, listed at once, loaded in the background.

The server listens and its index lists every model of the folder before any loads; a
background loader then loads them up to the budget (``--max-loaded-models``,
``--max-loaded-bytes``) while a request for a model not loaded yet loads that one first.

What the health endpoints answer meanwhile: the server is ready (``/v2/health/ready``)
as soon as it listens, since every listed model is servable: a request loads it. A
model's own ready (``/v2/models/<name>/ready``) is true for a model loaded or waiting
to load (evicted or not loaded yet), as for an evicted one; the index tells them apart
(``READY``, or ``UNAVAILABLE`` with the reason). A model that fails to load stays in the
index, ``UNAVAILABLE`` with its error, and answers 404 until it is loaded again
(``POST /v2/repository/models/<name>/load``).

With ``--workers`` above one the models load before the workers fork, as one model's
do, so that the workers share their memory.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from modelhost import errors, storage
from modelhost.model.preloader import Preloader
from modelhost.model.repository import ModelRepository
from modelhost.runtimes import model_folder
from modelhost.server.extensions import ServerExtensions
from modelhost.server.model_server import ModelServer
from modelhost.settings import ServerSettings, StorageSettings

__all__ = ["PRELOAD_THREADS", "repository_for", "serve_repository"]

logger = logging.getLogger("modelhost.cli")

# Unpickling small scikit-learn models holds the GIL: one thread loads a folder of them
# as fast as more (0.85 ms a model with one, slower with two or four, on two cores).
PRELOAD_THREADS = 1


def repository_for(
    root: Path,
    options: dict[str, Any],
    settings: ServerSettings,
    storage_settings: StorageSettings,
) -> tuple[ModelRepository, list[str]]:
    """A repository over ``root``'s model folders, every one known and none loaded yet."""
    folder = model_folder.ModelFolder(
        root, options, resolve=lambda uri: storage.download(uri, storage_settings)
    )
    repository = ModelRepository(
        loader=folder.build,
        lister=folder.names,
        max_loaded_models=settings.max_loaded_models,
        max_loaded_bytes=settings.max_loaded_bytes,
    )
    names = folder.names()
    if not names:
        raise errors.ModelLoadError(f"No model folder in {root}.")
    repository.defer_all(names)
    return repository, names


def serve_repository(
    root: Path,
    options: dict[str, Any],
    settings: ServerSettings,
    storage_settings: StorageSettings,
    extensions: ServerExtensions,
    preload_threads: int = PRELOAD_THREADS,
) -> None:
    """Serve the models of ``root`` until the server stops (blocking)."""
    repository, names = repository_for(root, options, settings, storage_settings)
    # The models loaded in the background live as long as the server: out of the
    # collector's sight once loaded, as what start-up built is (ModelServer), so that a full
    # collection does not scan 10,000 models' objects.
    preloader = Preloader(repository, names, preload_threads, on_done=gc.freeze)
    server = ModelServer(settings=settings, registered_models=repository, extensions=extensions)
    if settings.workers > 1:
        progress = preloader.run()
        logger.info(
            "Loaded %d models (%d failed) before the workers fork", progress.loaded, progress.failed
        )
        server.start()
        return
    preloader.start(gate=server.wait_started)
    try:
        server.start()
    finally:
        preloader.stop()
