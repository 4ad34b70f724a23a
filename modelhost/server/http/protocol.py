"""uvicorn's httptools protocol with the limits uvicorn lacks: deadlines, caps, header sizes.

uvicorn times out only an idle keep-alive connection: a connection that never finishes its
headers, or a body shorter than its Content-Length, holds a file descriptor and a task
forever. This subclass adds a header deadline (from the connection's start or the request's
first byte), a body progress deadline (408 and close), a cap on open connections (503 and
close at once) and on header lines and bytes (431), all from :class:`Http1Limits`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from modelhost import errors
from modelhost.server.http.direct import (
    DIRECT_BODY_LIMIT,
    DirectApp,
    DirectCycle,
    direct_body_length,
    direct_path,
)
from modelhost.server.http.messages import HttpResponse
from modelhost.settings import Http1Limits
from modelhost.transport.http1_limits import DeadlineSweeper, capped_connections, error_response

__all__ = ["LimitedHttpToolsProtocol", "limited_protocol"]

# Where a connection is: waiting for a request, reading its headers, reading its body,
# waiting for the application's answer, or closed by a limit.
_IDLE, _HEADERS, _BODY, _APP, _CLOSED = range(5)


class _Shared:
    """One listener's limits and sweep, shared by its connections."""

    def __init__(self, limits: Http1Limits, direct: DirectApp | None) -> None:
        self.limits = limits
        self.direct = direct
        self.max_connections = capped_connections(limits.max_connections)
        self.sweeper = DeadlineSweeper((limits.header_timeout_s, limits.body_timeout_s))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal is on the protocol."""


def limited_protocol(
    limits: Http1Limits, direct: DirectApp | None = None
) -> Callable[..., asyncio.Protocol]:
    """What ``uvicorn.Config(http=...)`` takes: it builds each connection's protocol.

    With ``direct``, small inference requests are answered by that app without uvicorn's
    cycle (:mod:`modelhost.server.http.direct`); it must be the app uvicorn serves.
    """
    return functools.partial(LimitedHttpToolsProtocol, _Shared(limits, direct))


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        shared: _Shared,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._shared = shared
        self._limits = shared.limits
        # time.monotonic() past which the connection has made too little progress (0.0: none).
        self.deadline = 0.0
        self._phase = _IDLE
        # Header bytes of the request being read; -1: it began in the current read.
        self._head_bytes = 0
        self._refusal: errors.ModelhostError | None = None
        # Whether an answer went out: the deadline of an idle connection is then its
        # keep-alive timeout, and a new request's header time starts at its first byte.
        self._answered = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._shared.max_connections:
            self._refuse(
                errors.ServerBusy(
                    f"The server has {self._shared.max_connections} connections open already."
                )
            )
            return
        # A connection that sends nothing is closed after the header timeout too.
        self.deadline = time.monotonic() + self._limits.header_timeout_s
        self._shared.sweeper.add(self)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            self.deadline = time.monotonic() + self._limits.body_timeout_s
        elif phase == _IDLE:
            self._phase = _HEADERS
            if self._answered:  # a new connection's deadline runs from its start
                self.deadline = time.monotonic() + self._limits.header_timeout_s
        elif phase == _CLOSED:
            return
        super().data_received(data)
        if self._phase == _HEADERS:
            # Counted per read, not per header: a request's first read is not counted, so
            # the limit holds to within one read (at most 256 KiB).
            if self._head_bytes < 0:
                self._head_bytes = 0
            else:
                self._head_bytes += len(data)
                if self._head_bytes > self._limits.max_header_bytes:
                    self._refuse(
                        errors.HeadersTooLarge(
                            f"Request headers exceed {self._limits.max_header_bytes} bytes."
                        )
                    )

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self.deadline = 0.0
        self._shared.sweeper.discard(self)
        super().connection_lost(exc)
        cycle: object = self.cycle
        if type(cycle) is DirectCycle:
            assert self._shared.direct is not None
            cycle.abandon(self._shared.direct)

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = -1
        if self._phase == _APP:  # pipelined behind a request still being answered
            self._phase = _HEADERS
            self.deadline = time.monotonic() + self._limits.header_timeout_s

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._limits.max_header_count:
            self._refusal = errors.HeadersTooLarge(
                f"A request may have at most {self._limits.max_header_count} header lines."
            )
            raise _Refused
        if self._shared.direct is None or not self._start_direct():
            super().on_headers_complete()
        self._phase = _BODY
        self.deadline = time.monotonic() + self._limits.body_timeout_s

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if type(cycle) is DirectCycle:
            # Kept whole, without uvicorn's pause every 64 KiB: its size was admitted.
            if not cycle.response_complete:
                cycle.chunks.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered before its body came (a refusal, a 404): the body is read (closing
            # before it is could reset the connection under the answer), and the connection
            # is idle, or done.
            if not cycle.keep_alive:
                self._close()
                return
            self._idle()
            return
        self._phase = _APP
        self.deadline = 0.0
        direct: object = cycle
        if type(direct) is DirectCycle:
            assert self._shared.direct is not None
            task = self.loop.create_task(direct.run(self._shared.direct))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    def _start_direct(self) -> bool:
        """Take a small inference request past uvicorn's cycle; False: uvicorn takes it."""
        existing = self.cycle
        if existing is not None and not existing.response_complete:
            return False  # pipelined behind an answer in progress: uvicorn queues it
        parser = self.parser
        if parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
            return False
        path = direct_path(self.url)
        length = direct_body_length(self.headers)
        if path is None or length < 0 or parser.should_upgrade():
            return False
        direct = self._shared.direct
        assert direct is not None
        route = direct.direct_route(path)
        if route is None:
            return False
        scope = self.scope
        scope["method"] = "POST"
        scope["path"] = path
        scope["raw_path"] = self.url
        scope["query_string"] = b""
        cycle = DirectCycle(
            cast(Any, scope),
            route,
            self.transport,
            parser.should_keep_alive(),
            self.server_state.default_headers,
            self.on_response_complete,
            self.flow,
        )
        self.cycle = cycle  # type: ignore[assignment]
        if length > DIRECT_BODY_LIMIT:
            entered = direct.enter_directly(cast(Any, scope), route, length)
            if isinstance(entered, HttpResponse):
                cycle.refuse(entered)
            else:
                cycle.ticket = entered
        return True

    def on_response_complete(self) -> None:
        # uvicorn's, but an idle connection's keep-alive timeout is its deadline in the
        # sweep rather than a timer armed and cancelled for every request.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._answered = True
        self.flow.resume_reading()
        phase = self._phase
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif phase == _APP:
            self._idle()
        if phase == _HEADERS:
            # Sent while the answer was being written: its time starts now.
            self.deadline = time.monotonic() + self._limits.header_timeout_s

    def _idle(self) -> None:
        """Between requests: closed by the sweep once the keep-alive timeout passes."""
        self._phase = _IDLE
        self.deadline = time.monotonic() + self.timeout_keep_alive

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error (a callback's exception too) with a 400.
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        self._phase = _CLOSED
        super().send_400_response(msg)

    # -- limits --

    def expire(self, now: float) -> None:
        """The deadline passed: 408 (or, with no request begun, a silent close)."""
        phase = self._phase
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if self.flow.read_paused or (phase == _HEADERS and answering):
            # The server stopped reading, or is still answering the previous request: the
            # client cannot be blamed for the time, which starts again.
            timeout = (
                self._limits.body_timeout_s if phase == _BODY else self._limits.header_timeout_s
            )
            self.deadline = now + timeout
            return
        if phase == _IDLE:
            self._close()
        elif phase == _HEADERS:
            self._refuse(
                errors.RequestTimeout(
                    f"The request's headers took longer than {self._limits.header_timeout_s} s."
                )
            )
        elif phase == _BODY:
            if cycle is not None and not cycle.response_started:
                # The application waits on the body: it sees a disconnect, and says nothing.
                cycle.disconnected = True
                cycle.message_event.set()
                self._refuse(
                    errors.RequestTimeout(
                        f"No byte of the request's body came for {self._limits.body_timeout_s} s."
                    )
                )
            else:
                self._close()
        else:
            self.deadline = 0.0

    def _refuse(self, exc: errors.ModelhostError) -> None:
        if self._phase != _CLOSED and not self.transport.is_closing():
            self.transport.write(error_response(exc))
        self._close()

    def _close(self) -> None:
        self._phase = _CLOSED
        self.deadline = 0.0
        self._shared.sweeper.discard(self)
        if not self.transport.is_closing():
            self.transport.close()
