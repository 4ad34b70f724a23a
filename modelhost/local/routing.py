"""Which component a request goes to, and which of its revisions: the ingress and the split.

The routes come from the plan (KServe's host rules, then host-less path rules); the split is
Knative's traffic block as served now (:func:`modelhost.control.effective_traffic`). Shares are
dealt with a smooth weighted round robin rather than at random, so 10% is 1 request in 10,
every 10, which makes a canary's error rate visible after a few requests instead of a few
hundred.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from modelhost.control import Route
from modelhost.transport.http1_upstream import strip_port

__all__ = ["MODEL_PATH_PREFIXES", "CompiledRoute", "RouteTable", "WeightedChoice"]

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
    """Every service's routes: host rules of all services first, then path rules.

    The first rule that matches wins, as if every rule were tried in turn; but a request is
    tried only against the rules that can match it, so what a request costs does not grow with
    the number of services: host rules are grouped by host, and path rules that name a model
    (``/v1/models/<name>...``, ``/v2/models/<name>...``, as every service's do) by that name,
    each group kept in the table's order with the rules that name none.
    """

    def __init__(self, routes: Sequence[tuple[Route, C]] = ()) -> None:
        compiled = [CompiledRoute.compile(route, target) for route, target in routes]
        self._by_host: dict[str, list[CompiledRoute[C]]] = {}
        by_path = []
        for route in compiled:
            if route.route.host is not None:
                self._by_host.setdefault(route.route.host, []).append(route)
            else:
                by_path.append(route)
        self.hosts = frozenset(self._by_host)
        # Path rules by the model path they are bound to. A rule bound to none is tried for
        # every path, but for a model path only if its pattern's literal start allows one
        # (an OpenAI rule's ``/openai/`` does not): each group keeps the table's order.
        groups: dict[str, list[tuple[int, CompiledRoute[C]]]] = {}
        unbound: list[tuple[int, CompiledRoute[C]]] = []
        self._anywhere: list[CompiledRoute[C]] = []
        for position, route in enumerate(by_path):
            key = _route_key(route.route.path)
            if key is not None:
                groups.setdefault(key, []).append((position, route))
                continue
            self._anywhere.append(route)
            if _may_match_a_model_path(route.route.path):
                unbound.append((position, route))
        self._unbound = [route for _, route in unbound]
        self._by_model_path = {
            key: [route for _, route in sorted(group + unbound, key=lambda item: item[0])]
            for key, group in groups.items()
        }
        # Whether a path's request must name its model: only some rules ask, most alike (and
        # an OpenAI rule's ``/openai/.*`` not for a model path).
        self._model_paths = _unique_patterns(r for r in by_path if r.route.model is not None)
        self._model_paths_of_models = [
            pattern
            for pattern in self._model_paths
            if pattern is None or _may_match_a_model_path(pattern.pattern)
        ]

    def match(self, host: str, path: str, model: str | None = None) -> C | None:
        for route in self._by_host.get(host, ()):
            if route.matches(host, path, model):
                return route.target
        key = _path_key(path)
        group = self._anywhere if key is None else self._by_model_path.get(key, self._unbound)
        for route in group:
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
        patterns = (
            self._model_paths_of_models
            if path.startswith(MODEL_PATH_PREFIXES)
            else self._model_paths
        )
        return any(pattern is None or pattern.fullmatch(path) for pattern in patterns)


# A path rule bound to one model path: ``/v1/models/<name>`` or ``/v2/models/<name>`` as
# literal text (the plans write the name with ``re.escape``: ``sklearn\-iris``), then nothing,
# ``:<verb>``, ``(:[a-z]+)?`` or ``(/.*)?`` (the plans' shapes). Every path such a rule
# matches starts with that text and then ends or goes on with ``/`` or ``:``; a rule of any
# other shape is bound to no model path (tried for every path).
_MODEL_RULE = re.compile(
    r"(/v[12]/models/)((?:[A-Za-z0-9_-]|\\[-.])+)"
    r"(?::[A-Za-z]+|\(:\[a-z\]\+\)\?|\(/\.\*\)\?)?"
)
# The paths of KServe's v1 and v2 model APIs: a request's model path starts with one.
MODEL_PATH_PREFIXES = ("/v1/models/", "/v2/models/")
_PREFIX_LENGTH = len("/v1/models/")
# The text a pattern starts with before its first special character.
_LITERAL_START = re.compile(r"[^.^$*+?{}\[\]\\|()]*")


def _route_key(pattern: str | None) -> str | None:
    """The model path a rule's pattern is bound to, or None."""
    if pattern is None:
        return None
    found = _MODEL_RULE.fullmatch(pattern)
    if found is None:
        return None
    return found.group(1) + found.group(2).replace("\\", "")  # the name as a path has it


def _may_match_a_model_path(pattern: str | None) -> bool:
    """Whether a pattern's literal start leaves room for a ``/v1/models/`` or ``/v2/models/``
    path (a pattern starting with a special character always does)."""
    if pattern is None or "|" in pattern:
        return True  # an alternation's other branches may start anywhere
    literal = _LITERAL_START.match(pattern)
    start = literal.group(0) if literal is not None else ""
    if pattern[len(start) : len(start) + 1] in ("?", "*", "{"):
        start = start[:-1]  # a quantifier makes the last character optional
    return any(
        prefix.startswith(start) or start.startswith(prefix) for prefix in MODEL_PATH_PREFIXES
    )


def _path_key(path: str) -> str | None:
    """A request path's model path: ``/v2/models/iris`` of ``/v2/models/iris/infer``."""
    if not path.startswith(MODEL_PATH_PREFIXES):
        return None
    end = len(path)
    for stop in ("/", ":"):
        at = path.find(stop, _PREFIX_LENGTH)
        if at != -1 and at < end:
            end = at
    return path[:end]


def _unique_patterns(routes: Iterable[CompiledRoute[C]]) -> list[re.Pattern[str] | None]:
    unique: dict[str | None, re.Pattern[str] | None] = {}
    for route in routes:
        unique.setdefault(route.route.path, route.path)
    return list(unique.values())
