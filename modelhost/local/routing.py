"""Which component a request goes to, and which of its revisions: the ingress and the split.

The routes come from the plan (KServe's host rules, then host-less path rules); the split is
Knative's traffic block as served now (:func:`modelhost.control.effective_traffic`). Shares are
dealt with a smooth weighted round robin rather than at random, so 10% is 1 request in 10,
every 10, which makes a canary's error rate visible after a few requests instead of a few
hundred.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from modelhost.control import Route
from modelhost.transport.http1_upstream import strip_port

__all__ = ["CompiledRoute", "RouteTable", "WeightedChoice"]

T = TypeVar("T")
C = TypeVar("C")


class WeightedChoice(Generic[T]):
    """Smooth weighted round robin (nginx's): exact shares, evenly interleaved."""

    def __init__(self, choices: Sequence[tuple[T, int]]) -> None:
        self._choices = [(item, weight) for item, weight in choices if weight > 0]
        self._current = [0] * len(self._choices)
        self._total = sum(weight for _, weight in self._choices)

    def __len__(self) -> int:
        return len(self._choices)

    @property
    def items(self) -> list[tuple[T, int]]:
        return list(self._choices)

    def next(self) -> T | None:
        if not self._choices:
            return None
        if len(self._choices) == 1:
            return self._choices[0][0]
        best = 0
        for index, (_, weight) in enumerate(self._choices):
            self._current[index] += weight
            if self._current[index] > self._current[best]:
                best = index
        self._current[best] -= self._total
        return self._choices[best][0]


@dataclass(frozen=True)
class CompiledRoute(Generic[C]):
    route: Route
    target: C
    path: re.Pattern[str] | None = field(default=None, compare=False)

    @classmethod
    def compile(cls, route: Route, target: C) -> CompiledRoute[C]:
        return cls(route, target, re.compile(route.path) if route.path else None)

    def matches(self, host: str, path: str, model: str | None) -> bool:
        route = self.route
        if route.host is not None and route.host != host:
            return False
        if self.path is not None and self.path.fullmatch(path) is None:
            return False
        return route.model is None or route.model == model


class RouteTable(Generic[C]):
    """Every service's routes: host rules of all services first, then path rules."""

    def __init__(self, routes: Sequence[tuple[Route, C]] = ()) -> None:
        compiled = [CompiledRoute.compile(route, target) for route, target in routes]
        self._by_host = [r for r in compiled if r.route.host is not None]
        self._by_path = [r for r in compiled if r.route.host is None]
        self.hosts = frozenset(r.route.host for r in self._by_host if r.route.host)

    def match(self, host: str, path: str, model: str | None = None) -> C | None:
        if host in self.hosts:
            for route in self._by_host:
                if route.matches(host, path, model):
                    return route.target
        for route in self._by_path:
            if route.matches(host, path, model):
                return route.target
        return None

    def match_call(self, host: str | None, model: str | None) -> C | None:
        """A gRPC call's target: by its ``host`` metadata, else by the model it names."""
        found = self.match(strip_port(host), "/") if host else None
        if found is None and model:
            found = self.match("", f"/v2/models/{model}/infer")
        return found

    def needs_model(self, path: str) -> bool:
        """Whether a path-routed request must have its body's ``model`` read (OpenAI)."""
        return any(
            r.route.model is not None and (r.path is None or r.path.fullmatch(path))
            for r in self._by_path
        )
