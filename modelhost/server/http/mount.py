"""An ASGI app of a layer above the server, answering some paths on the server's port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelhost.server.http.asgi import AsgiApp

if TYPE_CHECKING:
    from modelhost.server.dataplane import DataPlane

__all__ = ["AsgiApp", "Mount"]


@dataclass(frozen=True, slots=True)
class Mount:
    """An ASGI app answering the requests ``matches`` accepts (given method and path).

    With tokens on, a GET needs a caller token and anything else a deployer token. The
    server calls ``bind`` with its data plane once it is built (for an app that calls the
    server's models), awaits ``on_start`` before it listens and ``on_stop`` once its
    requests drained.
    """

    matches: Callable[[str, str], bool]
    app: AsgiApp
    name: str
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    bind: Callable[[DataPlane], None] | None = None
