"""Responses that produce their body while they send it: SSE streams and long JSON answers.

A handler validates the request and returns a :class:`StreamingResponse`; the ASGI app then
calls :meth:`StreamingResponse.send_to`, which runs the body's producer under two watches:

* the client: a task reads ``receive`` and, on ``http.disconnect``, cancels the request's
  task at once, wherever it waits (in a queue, between parts), so the producer is closed
  and what it holds freed without waiting for the next part to fail to send (uvicorn's
  ``send`` silently drops what a gone client would have received);
* the clock: past ``timeout_s`` the same cancellation stops the producer, and the client
  gets a 504 (or, once streaming, an error event).

The first part is produced before the status line is sent, so a full queue (429), a
prompt that does not fit (400) or a model that is not ready (503) get their own status
even on a streamed request. The protocol that made the response shapes its errors: it
injects ``render_error``, so this module knows HTTP and SSE, and no protocol's fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson

from modelhost import errors

__all__ = ["CLIENT_CLOSED", "ErrorRenderer", "ResponseTimeout", "StreamingResponse", "sse"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
# An error's status and JSON payload, in the shape of the protocol that made the response.
ErrorRenderer = Callable[[BaseException], tuple[int, Any]]

# Status reported (to metrics and logs) for a request whose client went away: nginx's.
CLIENT_CLOSED = 499

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies that buffer (nginx) would hold the events back until the end.
    (b"x-accel-buffering", b"no"),
]


class ResponseTimeout(errors.ModelhostError):
    """A response ran past the server's limit for producing one, and was stopped."""

    status_code = 504
    grpc_status = "DEADLINE_EXCEEDED"


def sse(payload: Any) -> bytes:
    """One Server-Sent Event carrying ``payload`` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class StreamingResponse:
    """A response whose body is produced while it is sent (see the module docstring).

    ``parts`` yields the body: one JSON document when ``stream`` is false, SSE events when
    true. ``render_error`` gives an error's status and payload; in a stream, the payload
    goes out as an event followed by ``error_tail`` (OpenAI's ``[DONE]``, say). ``on_close``
    runs once, however the response ends (it releases what the producer held).
    """

    def __init__(
        self,
        parts: AsyncGenerator[bytes, None],
        *,
        stream: bool,
        timeout_s: float,
        render_error: ErrorRenderer,
        error_tail: bytes = b"",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.parts = parts
        self.stream = stream
        self.timeout_s = timeout_s
        self.render_error = render_error
        self.error_tail = error_tail
        self.on_close = on_close
        self.status = 200
        self._started = False

    async def send_to(self, send: Send, receive: Receive, method: str) -> int:
        """Run and send the response; returns the status for metrics and the access log."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # "working" is true while a disconnect or the deadline may still cancel the task,
        # and turns false before anything else is awaited once the work ends: a cancel
        # must never reach the app's code after this method.
        state = {"working": True, "gone": False, "expired": False}

        def interrupt(reason: str) -> None:
            if state["working"]:
                state[reason] = True
                task.cancel()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            interrupt("gone")

        watcher = loop.create_task(watch())
        timer = loop.call_later(self.timeout_s, interrupt, "expired")
        try:
            try:
                await self._run(send, method)
                state["working"] = False
            except asyncio.CancelledError:
                state["working"] = False
                if not (state["gone"] or state["expired"]):
                    raise
                uncancel = getattr(task, "uncancel", None)
                if uncancel is not None:
                    uncancel()
                if state["gone"]:
                    self.status = CLIENT_CLOSED
                else:
                    limit = f"{self.timeout_s:g}"
                    await self._fail(
                        send, ResponseTimeout(f"The request took longer than {limit} s.")
                    )
            except Exception as exc:
                state["working"] = False
                await self._fail(send, exc)
        finally:
            state["working"] = False
            timer.cancel()
            watcher.cancel()
            await self._close()
        return self.status

    async def _run(self, send: Send, method: str) -> None:
        parts = self.parts
        try:
            first = await parts.__anext__()
        except StopAsyncIteration:
            first = b""
        if not self.stream:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(first)).encode("latin-1")),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            self._started = True
            body = b"" if method == "HEAD" else first
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        self._started = True
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        async for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(self, send: Send, exc: BaseException) -> None:
        status, payload = self.render_error(exc)
        try:
            if not self._started:
                self.status = status
                body = orjson.dumps(payload)
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("latin-1")),
                ]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            # The status line is gone already: the error travels as an event, as in vLLM.
            tail = sse(payload) + self.error_tail
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except OSError:
            # A server whose send raises for a gone client (uvicorn's does not).
            self.status = CLIENT_CLOSED

    async def _close(self) -> None:
        try:
            # Closes the producer's chain down to its source (the model's generator).
            await self.parts.aclose()
        finally:
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close()
