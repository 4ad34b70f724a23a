"""Responses that run their generation while they send: SSE streams and long JSON answers.

A handler validates the request and returns a :class:`DeferredResponse`; the ASGI app then
calls :meth:`DeferredResponse.send_to`, which runs the generation under two watches:

* the client: a task reads ``receive`` and, on ``http.disconnect``, cancels the request's
  task at once, wherever it waits (in the queue, between tokens), so the model's generator
  is closed and its slot freed without waiting for the next token to fail to send
  (uvicorn's ``send`` silently drops what a gone client would have received);
* the clock: past ``timeout_s`` the same cancellation stops the generation, and the client
  gets a 504 (or, once streaming, an error event).

The first part is produced before the status line is sent, so a full queue (429), a
prompt that does not fit (400) or a model that is not ready (503) get their own status
even on a streamed request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson

from modelhost.server.openai.errors import RequestTimeout

__all__ = ["DONE", "DeferredResponse", "sse"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
ErrorPayload = Callable[[BaseException], tuple[int, dict[str, Any]]]

DONE = b"data: [DONE]\n\n"
# Status reported (to metrics and logs) for a request whose client went away: nginx's.
CLIENT_CLOSED = 499

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies that buffer (nginx) would hold the tokens back until the end.
    (b"x-accel-buffering", b"no"),
]


def sse(payload: Any) -> bytes:
    """One Server-Sent Event carrying ``payload`` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class DeferredResponse:
    """A response whose body is produced while it is sent (see the module docstring).

    ``parts`` yields the body: one JSON document when ``stream`` is false, SSE events when
    true. ``error_payload`` shapes an error (OpenAI's or KServe's), ``done`` is sent after an
    error event in a stream (``[DONE]`` for OpenAI, nothing for generate_stream), and
    ``on_close`` runs once, however the response ends (it releases the model).
    """

    def __init__(
        self,
        parts: AsyncGenerator[bytes, None],
        *,
        stream: bool,
        timeout_s: float,
        error_payload: ErrorPayload,
        done: bytes = DONE,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.parts = parts
        self.stream = stream
        self.timeout_s = timeout_s
        self.error_payload = error_payload
        self.done = done
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
                        send, RequestTimeout(f"The request took longer than {limit} s.")
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
        status, payload = self.error_payload(exc)
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
            tail = sse(payload) + self.done
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except OSError:
            # A server whose send raises for a gone client (uvicorn's does not).
            self.status = CLIENT_CLOSED

    async def _close(self) -> None:
        try:
            # Closes the generation chain down to the model's generator (frees its slot).
            await self.parts.aclose()
        finally:
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close()
