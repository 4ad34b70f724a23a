"""Kubeflow's official Model Registry client, unchanged, on an event loop of its own.

Left to its default runner, the client applies ``nest_asyncio`` to the whole process (it
patches asyncio for every test that runs after it) and leaves its event loop open. Its own
``async_runner`` parameter takes a runner instead: here, a private loop, closed afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from model_registry import ModelRegistry  # type: ignore[import-untyped]


@contextmanager
def official_client(address: str, port: int, **options: Any) -> Iterator[ModelRegistry]:
    loop = asyncio.new_event_loop()
    try:
        yield ModelRegistry(address, port, async_runner=loop.run_until_complete, **options)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
