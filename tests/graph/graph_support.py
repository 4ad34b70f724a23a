"""Graph test helpers: KServe-shaped graph objects, and a scripted :class:`StepCaller`.

:class:`ScriptedSteps` stands where the network would be: it is the router's documented
seam (``StepCaller``), not a stand-in for a component that exists here, so the node rules can
be checked exactly (who got which body, with which headers and timeout) without sockets.
tests/graph/test_graph_loopback.py runs the same router over real HTTP servers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from modelhost.control.objects import InferenceGraph
from modelhost.graph import StepAnswer, predict_path


def make_graph(
    nodes: Mapping[str, Any], name: str = "g", namespace: str = "default", **spec: Any
) -> InferenceGraph:
    """An InferenceGraph from KServe's YAML shape (camelCase ``nodes``, ``routerTimeouts``)."""
    document = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodes": dict(nodes), **spec},
    }
    return msgspec.convert(document, InferenceGraph)


def service_url(service: str, protocol: str = "v1", namespace: str = "default") -> str:
    """Where the default resolver sends a ``serviceName`` step (KServe's cluster address)."""
    host = f"{service}.{namespace}.svc.cluster.local"
    return f"http://{host}{predict_path(service, protocol)}"


def answer(document: Any, status: int = 200, content_type: str = "application/json") -> StepAnswer:
    return StepAnswer(status, {"content-type": content_type}, orjson.dumps(document))


@dataclass(frozen=True)
class Call:
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float | None

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


Handler = Callable[[Call], "StepAnswer | Awaitable[StepAnswer]"]


class ScriptedSteps:
    """A ``StepCaller`` answering each URL with its handler; records every call in order."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.calls: list[Call] = []

    def on(self, url: str, handler: Handler) -> None:
        self.handlers[url] = handler

    def answers(self, url: str, document: Any, status: int = 200) -> None:
        self.handlers[url] = lambda call: answer(document, status)

    def calls_to(self, url: str) -> list[Call]:
        return [call for call in self.calls if call.url == url]

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float | None
    ) -> StepAnswer:
        call = Call(url, body, dict(headers), timeout)
        self.calls.append(call)
        result = self.handlers[url](call)
        if inspect.isawaitable(result):
            return await result
        return result


def tagged(tag: str) -> Handler:
    """A step that answers ``{"from": tag, "got": <the JSON it was sent>}``."""
    return lambda call: answer({"from": tag, "got": call.json})
