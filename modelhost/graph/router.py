"""Runs one request through an InferenceGraph's nodes, with KServe's router semantics.

A request enters at the ``root`` node. Each node's ``routerType`` says how its steps are used:

- ``Sequence``: the steps in order. A step gets the previous step's answer when its ``data``
  is ``$response`` and the node's input otherwise (KServe's rule; ``$request`` names it). A
  step with a ``condition`` runs only when the condition finds a value in the previous answer
  (the node's input for the first step); one that does not match is skipped. The last answer
  is the node's answer; a node whose steps were all skipped answers its input.
- ``Switch``: the first step whose ``condition`` matches the node's input handles it; when
  none matches, the input is the answer, unchanged.
- ``Ensemble``: every step at once, on the node's input; the answers, JSON objects, are merged
  into one object keyed by step ``name`` (the step's index, from 0, when it has none), each
  answer's bytes kept as they came.
- ``Splitter``: one step, drawn at random by ``weight``.

A ``nodeName`` step runs that node. A step whose ``dependency`` is ``Hard`` ends the graph
with its answer when that answer is not 2xx; a ``Soft`` step's failure is passed on like any
answer. When the graph's answer is a step's non-2xx answer, the client gets that status and
``{"error": "node root, step 2 (xgboost-iris): 503 ..."}``. A step that cannot be reached,
times out (``routerTimeouts.serviceClient`` per call) or is not deployed fails the request
with 502, 504 or 503 and a message naming its node and step.

Bodies go through as bytes with their ``content-type`` (and the v2 binary extension's
``inference-header-content-length``); the router decodes JSON only to evaluate a condition, to
merge an Ensemble, or to map ``predictions`` to ``instances`` for a step that asks. Every step
gets the request's ``x-request-id`` (one is made when the client sent none) and the headers
matching the ``propagate_headers`` patterns, as KServe's router config ``headers.propagate``.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple

import orjson

from modelhost.control.gjson import MISSING, Condition, ConditionError, compile_condition
from modelhost.control.objects.inference_graph import (
    RESPONSE_DATA,
    ROOT_NODE,
    ROUTER_TYPES,
    InferenceGraph,
    InferenceStep,
)
from modelhost.errors import ModelhostError, error_message, http_status
from modelhost.graph.caller import StepCaller
from modelhost.graph.errors import GraphSpecError, StepAnswerInvalid, StepError, step_location
from modelhost.graph.metrics import GraphMetrics, Tally
from modelhost.graph.resolve import GatewayResolver, ServiceResolver, StepTarget
from modelhost.protocol.request_ids import RequestIds
from modelhost.protocol.v2_json import HEADER_LENGTH

__all__ = [
    "REQUEST_ID_HEADER",
    "GraphResponse",
    "GraphRouter",
    "Payload",
    "RouterSettings",
    "request_protocol",
]

REQUEST_ID_HEADER = "x-request-id"
# Never copied from the client's request to a step, whatever the patterns say: they describe
# one hop's connection or the body, which the router sets itself for each call.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        HEADER_LENGTH,
        REQUEST_ID_HEADER,
    }
)
# Longest part of a step's non-JSON error body quoted in the graph's error.
_QUOTE_LIMIT = 300
# What a node answers while cancelled (the client went away), in the metrics: nginx's 499.
_CLIENT_GONE = 499


@dataclass(frozen=True)
class RouterSettings:
    """What the platform, not the graph, decides about routing.

    ``propagate_headers`` are regular expressions searched in header names, case-insensitively
    (KServe's ``PROPAGATE_HEADERS``); ``default_step_timeout`` (seconds) bounds a step call when
    the graph sets no ``routerTimeouts.serviceClient`` (None: no bound, as KServe).
    """

    propagate_headers: tuple[str, ...] = ()
    default_step_timeout: float | None = None


class Payload(NamedTuple):
    """A body and the headers that say how to read it."""

    body: bytes
    content_type: str | None = None
    header_length: str | None = None


class GraphResponse(NamedTuple):
    """What the graph answers: status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def request_protocol(path: str) -> str | None:
    """``v1`` or ``v2`` for a request at a ``/v1/`` or ``/v2/`` path; None at ``/`` (any other).

    None lets the resolver choose: each service's own protocol, as KServe's controller does.
    """
    if path.startswith("/v2/"):
        return "v2"
    if path.startswith("/v1/"):
        return "v1"
    return None


class _Outcome(NamedTuple):
    """A step's or node's answer, and which step gave it (None: no step, the input itself)."""

    payload: Payload
    status: int
    origin: str | None


@dataclass(frozen=True)
class _Step:
    spec: InferenceStep
    index: int
    label: str
    location: str
    condition: Condition | None
    # The spec's fields the router reads per request, read once: the spec's are properties.
    number: int
    hard: bool
    wants_response: bool
    # Where its calls are counted (None: no metrics).
    tally: Tally | None


@dataclass(frozen=True)
class _Node:
    name: str
    router_type: str
    steps: tuple[_Step, ...]
    total_weight: int
    tally: Tally | None


class _Request(NamedTuple):
    forwarded: Mapping[str, str]
    protocol: str | None


class GraphRouter:
    """Routes requests through one InferenceGraph; shared by all requests, safe to reuse.

    ``caller`` makes the step calls (:class:`~modelhost.graph.caller.HttpStepCaller` in a
    router process); ``resolver`` maps ``serviceName`` steps to URLs (by default KServe's
    ``http://<service>.<namespace>.svc.cluster.local/v1/models/<service>:predict``);
    ``rng`` draws Splitter steps; ``metrics`` and ``clock`` time nodes and steps.
    Raises :class:`GraphSpecError` for a graph it cannot run.
    """

    def __init__(
        self,
        graph: InferenceGraph,
        caller: StepCaller,
        resolver: ServiceResolver | None = None,
        *,
        settings: RouterSettings | None = None,
        metrics: GraphMetrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.graph = graph
        self.name = graph.name
        self.settings = settings or RouterSettings()
        self._caller = caller
        self._resolver = resolver or GatewayResolver(namespace=graph.namespace)
        self._rng = rng or random.Random()
        self._clock = clock
        self._nodes = _compile_nodes(graph, metrics)
        self._propagate = _compile_patterns(self.settings.propagate_headers)
        timeouts = graph.spec.router_timeouts
        service_client = timeouts.service_client if timeouts is not None else None
        # KServe: an http.Client with Timeout 0 has none.
        self._step_timeout = (
            float(service_client) if service_client else self.settings.default_step_timeout
        )
        self._ids = RequestIds()

    def route(
        self, body: bytes, headers: Mapping[str, str], path: str = "/"
    ) -> Coroutine[Any, Any, GraphResponse]:
        """The graph's answer to one request made at ``path`` (``/``, v1 or v2 predict)."""
        lowered = {name.lower(): value for name, value in headers.items()}
        return self.route_lowered(body, lowered, path)

    async def route_lowered(
        self, body: bytes, lowered: Mapping[str, str], path: str = "/"
    ) -> GraphResponse:
        """:meth:`route`, for headers whose names are lower-case already."""
        request_id = lowered.get(REQUEST_ID_HEADER) or self._ids.new()
        patterns = self._propagate
        forwarded = (
            {
                name: value
                for name, value in lowered.items()
                if name not in _HOP_HEADERS and any(p.search(name) for p in patterns)
            }
            if patterns
            else {}
        )
        forwarded[REQUEST_ID_HEADER] = request_id
        request = _Request(forwarded, request_protocol(path))
        payload = Payload(body, lowered.get("content-type"), lowered.get(HEADER_LENGTH))
        try:
            outcome = await self._run_node(self._nodes[ROOT_NODE], payload, request)
        except ModelhostError as exc:
            return _error_response(http_status(exc), error_message(exc), request_id)
        if outcome.origin is not None and not _succeeded(outcome.status):
            detail = _answer_detail(outcome.status, outcome.payload.body)
            message = f"{outcome.origin}: {outcome.status} {detail}"
            return _error_response(outcome.status, message, request_id)
        answer = outcome.payload
        response_headers = {
            "content-type": answer.content_type or "application/json",
            REQUEST_ID_HEADER: request_id,
        }
        if answer.header_length is not None:
            response_headers[HEADER_LENGTH] = answer.header_length
        return GraphResponse(outcome.status, response_headers, answer.body)

    # -- nodes -------------------------------------------------------------------------------

    async def _run_node(self, node: _Node, payload: Payload, request: _Request) -> _Outcome:
        start = self._clock()
        code = 500
        try:
            if node.router_type == "Sequence":
                outcome = await self._sequence(node, payload, request)
            elif node.router_type == "Switch":
                outcome = await self._switch(node, payload, request)
            elif node.router_type == "Ensemble":
                outcome = await self._ensemble(node, payload, request)
            else:
                outcome = await self._splitter(node, payload, request)
            code = outcome.status
            return outcome
        except ModelhostError as exc:
            code = http_status(exc)
            raise
        except asyncio.CancelledError:
            code = _CLIENT_GONE
            raise
        finally:
            if node.tally is not None:
                node.tally.observe(self._clock() - start, code)

    async def _sequence(self, node: _Node, payload: Payload, request: _Request) -> _Outcome:
        previous: _Outcome | None = None
        for step in node.steps:
            if step.condition is not None:
                subject = previous.payload if previous is not None else payload
                if not _matches(step.condition, _document(subject)):
                    continue
            data = previous.payload if step.wants_response and previous is not None else payload
            outcome = await self._call_step(node, step, data, request)
            if step.hard and not _succeeded(outcome.status):
                return outcome
            previous = outcome
        return previous if previous is not None else _Outcome(payload, 200, None)

    async def _switch(self, node: _Node, payload: Payload, request: _Request) -> _Outcome:
        document = _document(payload)
        for step in node.steps:
            if step.condition is not None and _matches(step.condition, document):
                return await self._call_step(node, step, payload, request)
        return _Outcome(payload, 200, None)

    async def _ensemble(self, node: _Node, payload: Payload, request: _Request) -> _Outcome:
        calls = [self._call_step(node, step, payload, request) for step in node.steps]
        outcomes = await _all_or_first_failure(calls)
        for step, outcome in zip(node.steps, outcomes, strict=True):
            # KServe: the first Hard step (in step order) that failed decides the answer.
            if step.hard and not _succeeded(outcome.status):
                return outcome
        members: dict[str, bytes] = {}
        for step, outcome in zip(node.steps, outcomes, strict=True):
            key = step.spec.name or str(step.index)
            try:
                members[key] = _ensemble_member(outcome)
            except StepError as exc:
                raise exc.at(node.name, step.number, step.label) from None
        body = b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in members.items()) + b"}"
        return _Outcome(Payload(body, "application/json"), 200, None)

    async def _splitter(self, node: _Node, payload: Payload, request: _Request) -> _Outcome:
        point = self._rng.randrange(node.total_weight)
        boundary = 0
        for step in node.steps:
            boundary += step.spec.weight or 0
            if point < boundary:
                return await self._call_step(node, step, payload, request)
        raise AssertionError("weights add up to total_weight")  # pragma: no cover

    # -- steps -------------------------------------------------------------------------------

    async def _call_step(
        self, node: _Node, step: _Step, payload: Payload, request: _Request
    ) -> _Outcome:
        start = self._clock()
        code = 500
        try:
            if step.spec.node_name:
                outcome = await self._run_node(self._nodes[step.spec.node_name], payload, request)
            else:
                # Awaited here, not in a coroutine of its own: a step is a hot path.
                url, body, headers = self._service_call(step, payload, request)
                answer = await self._caller(url, body, headers, self._step_timeout)
                answer_headers = answer.headers
                outcome = _Outcome(
                    Payload(
                        answer.body,
                        answer_headers.get("content-type"),
                        answer_headers.get(HEADER_LENGTH),
                    ),
                    answer.status,
                    step.location,
                )
            code = outcome.status
            return outcome
        except StepError as exc:
            located = exc.at(node.name, step.number, step.label)
            code = http_status(located)
            raise located from None
        except ModelhostError as exc:
            code = http_status(exc)
            raise
        except asyncio.CancelledError:
            code = _CLIENT_GONE
            raise
        finally:
            if step.tally is not None:
                step.tally.observe(self._clock() - start, code)

    def _service_call(
        self, step: _Step, payload: Payload, request: _Request
    ) -> tuple[str, bytes, dict[str, str]]:
        """The URL, body and headers of a ``serviceName`` or ``serviceUrl`` step's call."""
        spec = step.spec
        if spec.service_url:
            target = StepTarget(spec.service_url)
        else:
            target = self._resolver(spec.service_name or "", request.protocol)
        body = payload.body
        if spec.map_predictions_to_instances and payload.header_length is None:
            body = _predictions_as_instances(body)
        headers = dict(request.forwarded)
        headers["content-type"] = payload.content_type or "application/json"
        if payload.header_length is not None:
            headers[HEADER_LENGTH] = payload.header_length
        if target.host is not None:
            headers["host"] = target.host
        return target.url, body, headers


# -- building ----------------------------------------------------------------------------------


def _compile_nodes(graph: InferenceGraph, metrics: GraphMetrics | None) -> dict[str, _Node]:
    """The graph's nodes with conditions compiled; refuses what the router cannot run."""
    specs = graph.spec.nodes
    if ROOT_NODE not in specs:
        raise GraphSpecError(f"spec.nodes: graph {graph.name} has no {ROOT_NODE!r} node")
    nodes: dict[str, _Node] = {}
    for name, router in specs.items():
        where = f"spec.nodes.{name}"
        if router.router_type not in ROUTER_TYPES:
            raise GraphSpecError(
                f"{where}.routerType: {router.router_type!r} is not one of "
                f"{', '.join(ROUTER_TYPES)}"
            )
        steps = []
        for index, spec in enumerate(router.steps or []):
            step_where = f"{where}.steps[{index}]"
            targets = spec.targets
            if len(targets) != 1:
                raise GraphSpecError(
                    f"{step_where}: a step names exactly one of nodeName, serviceName, serviceUrl"
                )
            if spec.node_name and spec.node_name not in specs:
                raise GraphSpecError(f"{step_where}.nodeName: no node {spec.node_name!r}")
            label = spec.name or next(iter(targets.values()))
            steps.append(
                _Step(
                    spec=spec,
                    index=index,
                    label=label,
                    location=step_location(name, index + 1, label),
                    condition=_step_condition(router.router_type, spec, step_where),
                    number=index + 1,
                    hard=spec.hard,
                    wants_response=spec.data_source == RESPONSE_DATA,
                    tally=(
                        metrics.step_tally(graph.name, name, index + 1, label)
                        if metrics is not None
                        else None
                    ),
                )
            )
        total_weight = sum(step.spec.weight or 0 for step in steps)
        if router.router_type == "Splitter" and total_weight <= 0:
            raise GraphSpecError(f"{where}.steps: a Splitter needs steps with positive weights")
        tally = metrics.node_tally(graph.name, name) if metrics is not None else None
        nodes[name] = _Node(name, router.router_type, tuple(steps), total_weight, tally)
    _refuse_cycles(nodes)
    return nodes


def _step_condition(router_type: str, spec: InferenceStep, where: str) -> Condition | None:
    if router_type == "Switch":
        # KServe evaluates a Switch step's condition even when empty (GJSON's path "").
        text = spec.condition or ""
    elif router_type == "Sequence" and spec.condition:
        text = spec.condition
    else:
        return None
    try:
        return compile_condition(text)
    except ConditionError as exc:
        raise GraphSpecError(f"{where}.condition: {exc}") from None


def _refuse_cycles(nodes: Mapping[str, _Node]) -> None:
    """A node that reaches itself would recurse until the request failed: refuse it."""
    finished: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            cycle = " -> ".join((*trail[trail.index(name) :], name))
            raise GraphSpecError(f"spec.nodes: the nodes call each other in a cycle: {cycle}")
        if name in finished:
            return
        for step in nodes[name].steps:
            if step.spec.node_name:
                visit(step.spec.node_name, (*trail, name))
        finished.add(name)

    for name in nodes:
        visit(name, ())


def _compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise GraphSpecError(
                f"propagate_headers: {pattern!r} is not a regular expression: {exc}"
            ) from None
    return tuple(compiled)


# -- bodies ------------------------------------------------------------------------------------


def _succeeded(status: int) -> bool:
    return 200 <= status < 300


def _document(payload: Payload) -> Any:
    """The JSON a condition reads: the body, or a v2 binary body's JSON header; else MISSING."""
    body = payload.body
    if payload.header_length is not None:
        try:
            body = body[: int(payload.header_length)]
        except ValueError:
            return MISSING
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return MISSING


def _matches(condition: Condition, document: Any) -> bool:
    return document is not MISSING and condition.matches(document)


def _ensemble_member(outcome: _Outcome) -> bytes:
    """A step's answer as a member of the merged object: the JSON object's own bytes."""
    body = outcome.payload.body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = MISSING
    if isinstance(document, dict):
        return body.strip()
    if _succeeded(outcome.status):
        raise StepAnswerInvalid(
            "answered with a body that is not a JSON object, which an Ensemble cannot merge"
        )
    # A Soft step's failure without a JSON object still says what it was.
    return orjson.dumps({"error": f"{outcome.status} {_answer_detail(outcome.status, body)}"})


def _predictions_as_instances(body: bytes) -> bytes:
    """KServe's ``mapPredictionsToInstances``: a body's ``predictions`` sent as ``instances``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(document, dict) or "predictions" not in document:
        return body
    mapped = {"instances": document["predictions"]}
    mapped.update((k, v) for k, v in document.items() if k not in ("predictions", "instances"))
    return orjson.dumps(mapped)


def _answer_detail(status: int, body: bytes) -> str:
    """What a failed answer says: its ``error`` text, else its text (cut), else the reason."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        for key in ("error", "detail", "message"):
            value = document.get(key)
            if isinstance(value, str) and value:
                return value
    text = body.decode("utf-8", "replace").strip()
    if text:
        return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "..."
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no body"


def _error_response(status: int, message: str, request_id: str) -> GraphResponse:
    headers = {"content-type": "application/json", REQUEST_ID_HEADER: request_id}
    return GraphResponse(status, headers, orjson.dumps({"error": message}))


async def _all_or_first_failure(calls: list[Any]) -> list[_Outcome]:
    """Every call's outcome in order; the first to fail cancels the others and is raised."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return [task.result() for task in tasks]
