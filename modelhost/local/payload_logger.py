"""KServe's inference logger for the gateway: requests and responses as CloudEvents to a sink.

A component with a ``logger:`` has each request and/or response POSTed to the logger URL as
a binary-mode CloudEvent, with the attributes KServe's agent sidecar sets (``pkg/logger``),
so that consumers written for KServe (drift detectors, audit sinks) keep working:

- ``ce-type``: ``org.kubeflow.serving.inference.request`` / ``.response``
- ``ce-id``: the request's id, the same on the request and its response
- ``ce-source``: the agent's pod name in KServe; here :attr:`LogContext.source`
- ``ce-time``: when the request arrived or the response came back
- extensions ``inferenceservicename``, ``namespace``, ``component``, ``endpoint``,
  ``metadata`` (JSON of the allow-listed request headers, always set), ``annotations``
  (JSON of the chosen InferenceService annotations, set when there are any)
- the body is the payload as it was, under its own ``Content-Type``

Two departures, both deliberate. KServe logs only ``200`` responses (kserve#2722); every
response is logged here and carries its status in a ``statuscode`` extension, the name the
``logAllResponses`` opt-in of kserve#6036 gives it. And KServe's queue blocks the request
path when full; here a full queue drops the event, counts it and warns.

Header values are written as KServe's Go SDK writes them, not percent-encoded: its
``ce-metadata`` is raw JSON, and a percent-encoding sender (the Python SDK's binding) would
hand KServe-era consumers ``%22`` where they expect quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from modelhost.control.plan_types import LoggerPlan

__all__ = [
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "ExchangeSink",
    "LocalSink",
    "LogContext",
    "PayloadLogger",
]

logger = logging.getLogger("modelhost.payload_logger")

# A sink in the platform's own process: (CloudEvent headers, body) → HTTP status.
LocalSink = Callable[[Mapping[str, str], bytes], Awaitable[int]]

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

# A sink that blips is worth one more try; a dead one must not hold a worker for long.
_RETRY_DELAY_S = 0.1
# One warning per this many seconds per kind; the rest are counted into the next one.
_WARN_INTERVAL_S = 10.0
_HTTP_SCHEMES = frozenset({"http", "https"})
# Requests whose metadata waits for their response; the oldest go first past this many
# (a response that never comes must not keep its entry forever).
_MAX_AWAITING_RESPONSE = 10_000


@dataclass(frozen=True)
class LogContext:
    """Where a logged request was served: the event's identity attributes."""

    service: str
    namespace: str
    component: str
    endpoint: str  # the revision name, or 'predictor'
    # ce-source. KServe's agent uses its pod name; empty: ``<service>-<component>``, the
    # prefix of a Standard-mode pod name.
    source: str = ""


# A sink in the platform's own process that takes a whole exchange at once, with no event
# built: (where, request id, request body, response status, response body). Called on the
# event loop, on the request's path: it must only queue. Used for ``mode: all``, where both
# halves go to the same sink anyway.
ExchangeSink = Callable[[LogContext, str, bytes, int, bytes], None]


@dataclass(frozen=True)
class _Pending:
    """An event waiting in the queue; its headers are built by the worker that sends it."""

    plan: LoggerPlan
    ctx: LogContext
    ce_type: str
    ce_id: str
    ce_time: datetime.datetime
    content_type: str
    metadata: dict[str, list[str]]
    status: int | None
    body: bytes


class _Throttle:
    """A WARNING at most once per interval, saying how many were held back since."""

    def __init__(self, interval_s: float = _WARN_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._last = -interval_s
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._held += 1
            return
        suffix = f" ({self._held} more since the last warning)" if self._held else ""
        logger.warning(message + "%s", *args, suffix)
        self._last = now
        self._held = 0


class PayloadLogger:
    """Sends payload-log CloudEvents from a bounded queue with a few workers.

    ``log_request`` and ``log_response`` are called on the event loop's thread, on the
    request path: they only enqueue. The gateway calls both for every request of a logged
    component, whatever the mode, so that the response event can carry the request's
    metadata; except where :meth:`exchange_sink` gives it a sink for whole exchanges. One
    :class:`aiohttp.ClientSession` serves every sink.
    """

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        workers: int = 2,
        timeout_s: float = 5.0,
        local_sinks: Mapping[str, LocalSink] | None = None,
        exchange_sinks: Mapping[str, ExchangeSink] | None = None,
    ) -> None:
        if queue_size < 1 or workers < 1:
            raise ValueError("queue_size and workers must be at least 1")
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._worker_count = workers
        self._timeout_s = timeout_s
        # Sinks in this process, by logger URL (the trust service's built-in one).
        self._local_sinks = dict(local_sinks or {})
        self._exchange_sinks = dict(exchange_sinks or {})
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._sent = 0
        self._failed = 0
        self._dropped = 0
        self._drop_warning = _Throttle()
        self._fail_warning = _Throttle()
        self._awaiting_response: OrderedDict[str, dict[str, list[str]]] = OrderedDict()

    async def start(self) -> None:
        """Open the HTTP session and start the workers (again after a stop)."""
        if self._workers:
            return
        self._closed = False
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        self._workers = [
            asyncio.create_task(self._work(), name=f"payload-logger-{i}")
            for i in range(self._worker_count)
        ]

    async def stop(self, drain_s: float = 5.0) -> None:
        """Send what is queued, for up to ``drain_s``; what is left is counted as dropped."""
        self._closed = True
        if self._workers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        if left:
            self._dropped += left
            logger.warning("Payload logger stopped with %d events unsent; dropped", left)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def exchange_sink(self, plan: LoggerPlan) -> ExchangeSink | None:
        """The in-process sink that takes this plan's whole exchanges, if it has one.

        ``mode: all`` into such a sink builds no event: the gateway keeps the request's body
        and hands both bodies to the sink once answered, instead of calling
        :meth:`log_request` and :meth:`log_response`.
        """
        return self._exchange_sinks.get(plan.url) if plan.mode == "all" else None

    def log_request(
        self,
        plan: LoggerPlan,
        ctx: LogContext,
        request_id: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Queue the request event when the plan's mode logs requests."""
        metadata = _metadata(plan.metadata_headers, headers)
        if metadata and plan.mode in ("all", "response"):
            # KServe's response event carries the request's metadata headers.
            self._awaiting_response[request_id] = metadata
            if len(self._awaiting_response) > _MAX_AWAITING_RESPONSE:
                self._awaiting_response.popitem(last=False)
        if plan.mode not in ("all", "request"):
            return
        content_type = _header(headers, "content-type")
        self._enqueue(plan, ctx, REQUEST_TYPE, request_id, content_type, metadata, None, body)

    def log_response(
        self,
        plan: LoggerPlan,
        ctx: LogContext,
        request_id: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Queue the response event, whatever its status, when the mode logs responses.

        ``headers`` are the response's: its Content-Type is kept. The metadata is the one
        :meth:`log_request` took from the request under the same id, as KServe sends it;
        without one, the allow-listed headers are looked up in the response.
        """
        metadata = self._awaiting_response.pop(request_id, None)
        if plan.mode not in ("all", "response"):
            return
        if metadata is None:
            metadata = _metadata(plan.metadata_headers, headers)
        content_type = _header(headers, "content-type")
        self._enqueue(plan, ctx, RESPONSE_TYPE, request_id, content_type, metadata, status, body)

    @property
    def stats(self) -> Mapping[str, int]:
        """Events sent, failed (after the retry) and dropped (queue full or stopped)."""
        return {"sent": self._sent, "failed": self._failed, "dropped": self._dropped}

    def _enqueue(
        self,
        plan: LoggerPlan,
        ctx: LogContext,
        ce_type: str,
        ce_id: str,
        content_type: str,
        metadata: dict[str, list[str]],
        status: int | None,
        body: bytes,
    ) -> None:
        if not plan.url:
            # KServe starts no logger without a URL; there is nowhere to send to.
            return
        if self._closed:
            self._dropped += 1
            self._drop_warning.warn("Payload logger is stopped; %s event dropped", ce_type)
            return
        event = _Pending(
            plan=plan,
            ctx=ctx,
            ce_type=ce_type,
            ce_id=ce_id,
            ce_time=datetime.datetime.now(datetime.timezone.utc),
            content_type=content_type,
            metadata=metadata,
            status=status,
            body=bytes(body),
        )
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1
            self._drop_warning.warn(
                "Payload logger queue full (%d events); %s event for %s/%s dropped",
                self._queue.maxsize,
                ce_type,
                ctx.namespace,
                ctx.service,
            )

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            except asyncio.CancelledError:
                # stop() gave up on the drain mid-send: the event never reached the sink.
                self._dropped += 1
                raise
            except Exception:
                # A bug in building one event must not take a worker down with it.
                self._failed += 1
                logger.exception("Payload logger could not send a %s event", event.ce_type)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: _Pending) -> None:
        url = event.plan.url
        local = self._local_sinks.get(url)
        if local is not None:
            status = await local(_binary_headers(event), event.body)
            if 200 <= status < 300:
                self._sent += 1
            else:
                self._fail(event, f"HTTP {status}")
            return
        try:
            scheme = URL(url).scheme
        except ValueError:
            scheme = ""
        if scheme not in _HTTP_SCHEMES:
            # KServe writes s3/gs/abfs URLs to blob storage, which the gateway does not do.
            self._fail(event, f"unsupported logger URL {url!r} (only http and https)")
            return
        headers = _binary_headers(event)
        error = await self._post(url, headers, event.body)
        if error is not None:
            await asyncio.sleep(_RETRY_DELAY_S)
            error = await self._post(url, headers, event.body)
        if error is None:
            self._sent += 1
        else:
            self._fail(event, error)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        """None once the sink took the event, else why not."""
        session = self._session
        if session is None:
            return "the payload logger is not started"
        # Without a payload Content-Type, aiohttp would claim application/octet-stream.
        skip = () if "content-type" in headers else ("Content-Type",)
        try:
            async with session.post(
                url, data=body, headers=headers, skip_auto_headers=skip
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _fail(self, event: _Pending, error: str) -> None:
        self._failed += 1
        self._fail_warning.warn(
            "Payload logger could not send %s event %s to %s: %s",
            event.ce_type,
            event.ce_id,
            event.plan.url,
            error,
        )


def _binary_headers(event: _Pending) -> dict[str, str]:
    """The event's attributes as binary-mode HTTP headers, valued as KServe's agent does."""
    ctx = event.ctx
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event.ce_id,
        "ce-type": event.ce_type,
        "ce-source": ctx.source or f"{ctx.service}-{ctx.component}",
        "ce-time": event.ce_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "ce-inferenceservicename": ctx.service,
        "ce-namespace": ctx.namespace,
        "ce-component": ctx.component,
        "ce-endpoint": ctx.endpoint,
        "ce-metadata": _json(event.metadata),
    }
    if event.plan.metadata_annotations:
        headers["ce-annotations"] = _json(dict(event.plan.metadata_annotations))
    if event.status is not None:
        headers["ce-statuscode"] = str(event.status)
    if event.content_type:
        headers["content-type"] = event.content_type
    return {name: _header_safe(value) for name, value in headers.items()}


def _json(value: Any) -> str:
    # Compact with sorted keys, as Go's json.Marshal writes a map; ASCII-only, so the
    # value is a valid header as is.
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _header_safe(value: str) -> str:
    """Percent-encodes only what a header cannot carry (controls, non-ASCII)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(
        c if " " <= c <= "~" else "".join(f"%{b:02X}" for b in c.encode()) for c in value
    )


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, found whatever the mapping's key case (CIMultiDict or plain dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return ""


def _metadata(names: tuple[str, ...], headers: Mapping[str, str]) -> dict[str, list[str]]:
    """KServe's ``metadata``: each allow-listed header's values, under the name listed.

    KServe matches names against Go's canonical header spelling; matching regardless of
    case keys the same headers under the same names, and also finds lowercase spellings.
    """
    if not names:
        return {}
    wanted = {name.lower(): name for name in names}
    found: dict[str, list[str]] = {}
    # A multidict yields a repeated header once per value, as Go's Header holds them.
    for key, value in headers.items():
        name = wanted.get(key.lower())
        if name is not None:
            found.setdefault(name, []).append(value)
    return found
