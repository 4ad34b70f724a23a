"""The ASGI app serving TrustyAI's routes: ingest, data info, metrics and local explainers.

A plain ASGI callable (as the server's own app is) with a small exact-path route table.
It is self-contained: the platform mounts it on its gateway; a test serves it with uvicorn.
Store reads and writes, and metric evaluation, run in worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelhost import errors
from modelhost.server.http.asgi import Receive, Scope, Send, send_answer, serve_lifespan
from modelhost.server.http.messages import read_body
from modelhost.trust.drift import (
    DRIFT_DEFINITIONS,
    DRIFT_METRICS,
    evaluate_drift,
    parse_drift_request,
)
from modelhost.trust.explainers.caller import ModelCaller
from modelhost.trust.explainers.local import LOCAL_EXPLAINERS, LocalExplainers
from modelhost.trust.fairness import (
    DEFINITIONS,
    FAIRNESS_METRICS,
    MetricResult,
    evaluate_fairness,
    parse_fairness_request,
)
from modelhost.trust.ingest import (
    LoggedPayload,
    PairingBuffer,
    decode_cloudevent,
    decode_consumer_payload,
    decode_upload,
)
from modelhost.trust.scheduler import MetricScheduler
from modelhost.trust.store import Column, InferenceBatch, TrustStore
from modelhost.trust.writer import BatchWriter

__all__ = ["TrustApp", "TrustSettings"]


logger = logging.getLogger("modelhost.trust")

_IDS_PREFIX = "/info/inference/ids/"
_BATCH_TYPE = "application/cloudevents-batch+json"
_STRUCTURED_TYPE = "application/cloudevents+json"
_TYPE_NAMES = {"number": "DOUBLE", "bool": "BOOL", "string": "STRING"}


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """Limits of the trust app; the caller builds it (no environment is read)."""

    max_body_bytes: int = 64 * 1024 * 1024
    # Halves of inferences waiting for their other half (a response before its request).
    pending_halves: int = 10_000
    # Logged rows waiting for the in-process sink's next group commit; past it, dropped.
    max_pending_rows: int = 100_000


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidInput(f"The body is not valid JSON: {exc}.") from None


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"


def _json(content: Any, status: int = 200) -> _Response:
    return _Response(status, orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY))


Handler = Callable[[_Request], Awaitable[_Response]]


class TrustApp:
    """ASGI app for TrustyAI's API over one :class:`TrustStore` and one Prometheus registry."""

    def __init__(
        self,
        store: TrustStore,
        registry: CollectorRegistry,
        settings: TrustSettings,
        caller: ModelCaller | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._settings = settings
        self._pairing = PairingBuffer(settings.pending_halves)
        self.scheduler = MetricScheduler(store, registry)
        self.writer = BatchWriter(store, self.rows_written, settings.max_pending_rows)
        self._stale: set[str] = set()
        self._evaluator: asyncio.Task[None] | None = None
        self._routes: dict[str, dict[str, Handler]] = {}
        self._add("/", "POST", self._cloudevents)
        self._add("/consumer/kserve/v2", "POST", self._consumer)
        self._add("/data/upload", "POST", self._upload)
        self._add("/info", "GET", self._info)
        self._add("/info/names", "GET", self._names)
        self._add("/info/names", "POST", self._set_names)
        self._add("/info/names", "DELETE", self._clear_names)
        self._add("/info/tags", "GET", self._tags)
        self._add("/info/tags", "POST", self._tag)
        self._add("/q/metrics", "GET", self._prometheus)
        self._add(_IDS_PREFIX, "GET", self._inference_ids)
        self._add("/metrics/all/requests", "GET", self._all_requests)
        for metric in FAIRNESS_METRICS:
            self._metric_routes(f"/metrics/group/fairness/{metric}", metric)
        for metric in DRIFT_METRICS:
            self._metric_routes(f"/metrics/drift/{metric}", metric)
        # Explanations of stored predictions; ``caller`` reaches the models (None: 501).
        self.explainers = LocalExplainers(store, caller)
        for method in LOCAL_EXPLAINERS:
            self._explainer_route(method)

    def _add(self, path: str, method: str, handler: Handler) -> None:
        self._routes.setdefault(path, {})[method] = handler

    def _metric_routes(self, base: str, metric: str) -> None:
        async def compute(request: _Request) -> _Response:
            result = await asyncio.to_thread(self._compute, metric, request.json())
            return _json(result.to_json())

        async def definition(request: _Request) -> _Response:
            return _json({"name": metric.upper(), "definition": _definition(metric)})

        async def interpret(request: _Request) -> _Response:
            body = request.json()
            value = body.get("metricValue") if isinstance(body, dict) else None
            if isinstance(value, dict):
                value = value.get("value")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise errors.InvalidInput("metricValue must be a number (or {value: number}).")
            return _json(
                {"name": metric.upper(), "definition": _definition(metric), "value": value}
            )

        async def schedule(request: _Request) -> _Response:
            body = request.json()
            request_id = await asyncio.to_thread(self.scheduler.register, metric, body)
            return _json({"requestId": request_id})

        async def unschedule(request: _Request) -> _Response:
            body = request.json()
            request_id = body.get("requestId") if isinstance(body, dict) else None
            await asyncio.to_thread(self.scheduler.delete, metric, request_id)
            return _json({"requestId": request_id, "deleted": True})

        async def listed(request: _Request) -> _Response:
            return _json({"requests": self.scheduler.listed(metric)})

        self._add(base, "POST", compute)
        self._add(f"{base}/definition", "GET", definition)
        self._add(f"{base}/definition", "POST", interpret)
        self._add(f"{base}/request", "POST", schedule)
        self._add(f"{base}/request", "DELETE", unschedule)
        self._add(f"{base}/requests", "GET", listed)

    def _explainer_route(self, method: str) -> None:
        async def explain(request: _Request) -> _Response:
            return _json(await self.explainers.explain(method, request.json()))

        self._add(f"/explainers/local/{method}", "POST", explain)

    def _compute(self, metric: str, body: Any) -> MetricResult:
        if metric in FAIRNESS_METRICS:
            return evaluate_fairness(self._store, metric, parse_fairness_request(body))
        return evaluate_drift(self._store, metric, parse_drift_request(body))

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self._restore, self.settled)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            path = scope["path"].rstrip("/") or "/"
            methods = self._routes.get(path)
            if (
                methods is None
                and path.startswith(_IDS_PREFIX)
                and "/" not in path[len(_IDS_PREFIX) :]
            ):
                methods = self._routes[_IDS_PREFIX]  # TrustyAI's /info/inference/ids/{model}
            if methods is None:
                response = _json({"error": f"No route {scope['path']}."}, 404)
            elif scope["method"] not in methods:
                allowed = ", ".join(sorted(methods))
                response = _json({"error": f"{scope['method']} not allowed ({allowed})."}, 405)
            else:
                body = await read_body(receive, headers, self._settings.max_body_bytes)
                request = _Request(scope["method"], scope["path"], headers, body)
                request.query = scope.get("query_string", b"").decode("latin-1")
                response = await methods[scope["method"]](request)
        except errors.ModelhostError as exc:
            response = _json({"error": str(exc)}, errors.http_status(exc))
        except Exception:
            logger.exception("trust: %s %s failed", scope["method"], scope["path"])
            response = _json({"error": "Internal error."}, 500)
        await send_answer(send, response.status, response.body, response.content_type)

    async def _restore(self) -> None:
        await asyncio.to_thread(self.scheduler.restore)

    # -- ingest ---------------------------------------------------------------------------

    async def _cloudevents(self, request: _Request) -> _Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(_BATCH_TYPE):
            events = request.json()
            if not isinstance(events, list):
                raise errors.InvalidInput("A CloudEvents batch must be a JSON array of events.")
            halves: list[LoggedPayload] = []
            refused: list[dict[str, Any]] = []
            for index, event in enumerate(events):
                try:
                    halves.append(_structured(event))
                except errors.ModelhostError as exc:
                    event_id = event.get("id") if isinstance(event, dict) else None
                    refused.append({"index": index, "id": event_id, "error": str(exc)})
            stored, more = await self._pair_and_store(halves)
            refused += more
            if refused:
                message = f"{len(refused)} of {len(events)} events refused."
                return _json({"error": message, "refused": refused, "stored": stored}, 400)
            return _json({"stored": stored})
        if content_type.startswith(_STRUCTURED_TYPE):
            half = _structured(request.json())
        else:
            half = _binary(request.headers, request.json())
        stored, refused = await self._pair_and_store([half])
        if refused:
            return _json({"error": refused[0]["error"]}, 400)
        return _json({"stored": stored})

    async def _consumer(self, request: _Request) -> _Response:
        stored, refused = await self._pair_and_store([decode_consumer_payload(request.json())])
        if refused:
            return _json({"error": refused[0]["error"]}, 400)
        return _json({"stored": stored})

    async def _upload(self, request: _Request) -> _Response:
        batch = decode_upload(request.json())
        await asyncio.to_thread(self._write, [batch])
        self.rows_written({batch.model_id})
        return _json({"stored": len(batch), "modelId": batch.model_id, "tag": batch.tag})

    async def _pair_and_store(
        self, halves: list[LoggedPayload]
    ) -> tuple[int, list[dict[str, Any]]]:
        """Pairs each half (on the loop: the buffer is the loop's); writes the pairs made."""
        batches: list[InferenceBatch] = []
        refused: list[dict[str, Any]] = []
        for half in halves:
            try:
                batch = self._pairing.offer(half)
            except errors.ModelhostError as exc:
                refused.append({"id": half.payload_id, "error": str(exc)})
                continue
            if batch is not None:
                batches.append(batch)
        if not batches:
            return 0, refused
        stored, failed = await asyncio.to_thread(self._write, batches)
        self.rows_written({batch.model_id for batch in batches})
        return stored, refused + failed

    def _write(self, batches: list[InferenceBatch]) -> tuple[int, list[dict[str, Any]]]:
        """One transaction for all; if one does not fit, each alone so the others are kept."""
        failed: list[dict[str, Any]] = []
        try:
            stored = self._store.write(batches)
        except errors.ModelhostError:
            if len(batches) == 1:
                raise
            stored = 0
            for batch in batches:
                try:
                    stored += self._store.write([batch])
                except errors.ModelhostError as exc:
                    failed.append({"id": batch.request_ids[0], "error": str(exc)})
        return stored, failed

    def rows_written(self, model_ids: set[str]) -> None:
        """These models got rows (by this app's writer or another): re-evaluate their
        scheduled metrics soon, off the request's path.

        One evaluation runs at a time; models that get rows meanwhile wait for the next
        round, so a burst of logged requests costs one evaluation per round, not per request.
        """
        if not self.scheduler.watches(model_ids):
            return  # no scheduled metric reads these models' rows
        self._stale |= model_ids
        if self._evaluator is None or self._evaluator.done():
            self._evaluator = asyncio.get_running_loop().create_task(self._evaluate_stale())

    async def _evaluate_stale(self) -> None:
        while self._stale:
            model_ids, self._stale = self._stale, set()
            try:
                await asyncio.to_thread(self.scheduler.evaluate, model_ids)
            except Exception:
                logger.exception("trust: evaluating scheduled metrics of %s failed", model_ids)

    def ingest_logged(self, attributes: Mapping[str, str], body: bytes) -> None:
        """One event of the platform's payload logger, in-process: paired, then queued for a
        group commit (:class:`BatchWriter`). A malformed event raises ``InvalidInput``."""
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidInput(f"The event's data is not valid JSON: {exc}.") from None
        batch = self._pairing.offer(decode_cloudevent(attributes, data))
        if batch is not None:
            self.writer.add(batch)

    async def settled(self) -> None:
        """Wait until the scheduled metrics reflect every row stored so far."""
        await self.writer.settled()
        while self._evaluator is not None and not self._evaluator.done():
            await asyncio.shield(self._evaluator)

    # -- info -----------------------------------------------------------------------------

    async def _info(self, request: _Request) -> _Response:
        return _json(await asyncio.to_thread(self._info_blocking))

    def _info_blocking(self) -> dict[str, Any]:
        listed = {}
        for metric in FAIRNESS_METRICS + DRIFT_METRICS:
            listed[metric] = self.scheduler.listed(metric)
        info: dict[str, Any] = {}
        for model_id in self._store.models():
            schema = self._store.schema(model_id)
            counts: dict[str, int] = {}
            for metric, requests in listed.items():
                n = sum(1 for r in requests if r["request"].get("modelId") == model_id)
                if n:
                    counts[metric.upper()] = n
            info[model_id] = {
                "data": {
                    "modelId": model_id,
                    "observations": self._store.count(model_id),
                    "inputSchema": _readable_schema(schema.columns, "input"),
                    "outputSchema": _readable_schema(schema.columns, "output"),
                    "tags": self._store.tag_counts(model_id),
                },
                "metrics": {"scheduledMetadata": {"metricCounts": counts}},
            }
        return info

    async def _names(self, request: _Request) -> _Response:
        def blocking() -> dict[str, Any]:
            names: dict[str, Any] = {}
            for model_id in self._store.models():
                columns = self._store.schema(model_id).columns
                names[model_id] = {
                    "modelId": model_id,
                    "inputMapping": _mapped(columns, "input"),
                    "outputMapping": _mapped(columns, "output"),
                }
            return names

        return _json(await asyncio.to_thread(blocking))

    async def _set_names(self, request: _Request) -> _Response:
        body = _object(request.json())
        model_id = _model_id(body)
        inputs = _mapping(body, "inputMapping")
        outputs = _mapping(body, "outputMapping")
        await asyncio.to_thread(self._store.set_name_mapping, model_id, inputs, outputs)
        return _json({"modelId": model_id, "inputMapping": inputs, "outputMapping": outputs})

    async def _clear_names(self, request: _Request) -> _Response:
        model_id = _model_id(_object(request.json()))
        await asyncio.to_thread(self._store.clear_name_mapping, model_id)
        return _json({"modelId": model_id, "cleared": True})

    async def _tags(self, request: _Request) -> _Response:
        def blocking() -> dict[str, Any]:
            return {m: self._store.tag_counts(m) for m in self._store.models()}

        return _json(await asyncio.to_thread(blocking))

    async def _tag(self, request: _Request) -> _Response:
        body = _object(request.json())
        model_id = _model_id(body)
        tagging = body.get("dataTagging")
        if not isinstance(tagging, dict) or not tagging:
            raise errors.InvalidInput("dataTagging must map each tag to a list of row ranges.")
        plan: list[tuple[str, list[tuple[int, int]]]] = []
        for tag, ranges in tagging.items():
            if not tag or tag.startswith("_trustyai"):
                raise errors.InvalidInput(f"dataTagging tag {tag!r} is empty or reserved.")
            plan.append((tag, _ranges(tag, ranges)))

        def blocking() -> dict[str, int]:
            return {tag: self._store.tag_rows(model_id, tag, slices) for tag, slices in plan}

        return _json({"modelId": model_id, "tagged": await asyncio.to_thread(blocking)})

    async def _inference_ids(self, request: _Request) -> _Response:
        """TrustyAI's ``/info/inference/ids/{model}?type=all|organic``: the stored prediction
        ids (what ``/explainers/local/*`` take), oldest first."""
        model_id = request.path.rstrip("/")[len(_IDS_PREFIX) :]
        kind = urllib.parse.parse_qs(request.query).get("type", ["all"])[0]
        if kind not in ("all", "organic"):
            raise errors.InvalidInput(f"type must be all or organic, not {kind!r}.")
        if not model_id:
            raise errors.InvalidInput("Name the model: /info/inference/ids/<model>.")
        listed = await asyncio.to_thread(self._store.inference_ids, model_id, kind == "organic")
        return _json(
            [
                {"id": request_id, "timestamp": _iso(ts), "tag": tag}
                for request_id, ts, tag in listed
            ]
        )

    async def _all_requests(self, request: _Request) -> _Response:
        listed = []
        for metric in FAIRNESS_METRICS + DRIFT_METRICS:
            listed += self.scheduler.listed(metric)
        return _json({"requests": listed})

    async def _prometheus(self, request: _Request) -> _Response:
        return _Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


def _readable_schema(columns: tuple[Column, ...], role: str) -> dict[str, Any]:
    """One side of a model's columns as TrustyAI's /info shows it: items and name mapping."""
    own = [c for c in columns if c.role == role]
    items = {
        c.name: {"name": c.name, "type": _TYPE_NAMES[c.dtype], "index": i}
        for i, c in enumerate(own)
    }
    return {"items": items, "nameMapping": _mapped(columns, role)}


def _mapped(columns: tuple[Column, ...], role: str) -> dict[str, str]:
    return {c.name: c.mapped for c in columns if c.role == role and c.mapped}


def _definition(metric: str) -> str:
    return DEFINITIONS.get(metric) or DRIFT_DEFINITIONS[metric]


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.InvalidInput("The body must be a JSON object.")
    return body


def _model_id(body: dict[str, Any]) -> str:
    model_id = body.get("modelId")
    if not isinstance(model_id, str) or not model_id:
        raise errors.InvalidInput("modelId is required: a non-empty string.")
    return model_id


def _mapping(body: dict[str, Any], field: str) -> dict[str, str]:
    value = body.get(field) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise errors.InvalidInput(f"{field} must map column names to new names (strings).")
    return value


def _ranges(tag: str, ranges: Any) -> list[tuple[int, int]]:
    """TrustyAI's row selections: ``[i]`` is row ``i``, ``[start, end]`` rows start..end-1."""
    if not isinstance(ranges, list) or not ranges:
        raise errors.InvalidInput(f"dataTagging[{tag!r}] must be a non-empty list of ranges.")
    slices = []
    for item in ranges:
        if (
            not isinstance(item, list)
            or len(item) not in (1, 2)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in item)
        ):
            raise errors.InvalidInput(
                f"dataTagging[{tag!r}] holds {item!r}: each range is [row] or [start, end]."
            )
        slices.append((item[0], item[0] + 1) if len(item) == 1 else (item[0], item[1]))
    return slices


def _binary(headers: dict[str, str], data: Any) -> LoggedPayload:
    if "ce-specversion" not in headers:
        raise errors.InvalidInput(
            "Not a CloudEvent: binary mode needs ce-specversion (or send "
            f"{_STRUCTURED_TYPE} / {_BATCH_TYPE})."
        )
    attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    return decode_cloudevent(attributes, data)


def _structured(event: Any) -> LoggedPayload:
    if not isinstance(event, dict):
        raise errors.InvalidInput("A structured CloudEvent must be a JSON object.")
    if "specversion" not in event:
        raise errors.InvalidInput("The CloudEvent has no specversion.")
    return decode_cloudevent(event, event.get("data"))
