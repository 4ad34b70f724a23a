"""Shared fixtures: a real ``ModelServer`` on loopback ports picked by the kernel."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from serving import RunningServer, StartServer, start_server, stop_server

from modelhost import Model
from modelhost.model.repository import ModelRepository


@pytest.fixture
def serve() -> Iterator[StartServer]:
    """Start servers with ``serve([model, ...], **settings)``; all stop after the test."""
    started: list[RunningServer] = []

    def factory(
        models: Sequence[Model], repository: ModelRepository | None = None, **settings: Any
    ) -> RunningServer:
        running = start_server(models, repository, **settings)
        started.append(running)
        return running

    yield factory
    for running in started:
        stop_server(running)
