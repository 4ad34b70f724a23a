"""Shared fixtures: a real ``ModelServer`` on loopback ports picked by the kernel."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

import pytest
from serving import RunningServer, StartServer, start_server, stop_server

from modelhost import Model
from modelhost.model.repository import ModelRepository


class _LooptimeForMarkedTestsOnly:
    """looptime's pytest plugin, acting only on tests marked ``looptime`` (the operator's).

    Around every test, looptime 0.9 asks the event loop policy for the current loop, and
    the policy makes a new one where none is set (pytest-asyncio 1.x sets none there): one
    leaked loop per test, whose self-pipe sockets are later collected with a
    ResourceWarning inside some other test, which fails it.
    """

    def __init__(self, plugin: Any) -> None:
        self._plugin = plugin

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
        return (yield from self._plugin.pytest_fixture_setup(fixturedef, request))

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
        if pyfuncitem.get_closest_marker("looptime") is None:
            return (yield)
        return (yield from self._plugin.pytest_pyfunc_call(pyfuncitem))


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    plugin = manager.get_plugin("looptime_plugin")
    if plugin is not None:
        # The module stays registered for its fixture and marker; only its two hooks move.
        manager.unregister(name="looptime_plugin")
        manager.register(_LooptimeForMarkedTestsOnly(plugin), "looptime_marked_only")
        manager.register(_LooptimeFixtures(plugin), "looptime_fixtures")


class _LooptimeFixtures:
    """The ``looptime`` fixture of looptime's plugin, kept once its hooks are taken over."""

    def __init__(self, plugin: Any) -> None:
        self.looptime = plugin.looptime


@pytest.fixture(scope="session", autouse=True)
def fast_start_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The servers the tests start keep their fast-start cache in the session's temporary
    folder, not the user's ``~/.cache`` (``MODELHOST_FAST_START_DIR``, inherited by child
    processes)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MODELHOST_FAST_START_DIR", str(tmp_path_factory.mktemp("fast-start")))
    yield
    mp.undo()


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
