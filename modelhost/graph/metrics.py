"""Prometheus metrics of a graph router, per node and per step, in a registry given to it.

KServe's router exports none (it logs each node's and step's elapsed time); these answer the
same question on a dashboard: which node or step is slow or failing. Labels are bounded by the
graph's spec: ``graph``, ``node``, and for steps ``step`` (its number in the node, from 1) and
``name`` (its ``name``, else its service, node or URL). ``code`` on the error counters is the
HTTP status the failure surfaced as (a step's own non-2xx status, or 502/503/504).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import Metric

from modelhost.server.metric_tallies import HistogramTally, counter_family, histogram_family

__all__ = ["GraphMetrics", "RouterLoad", "Tally"]

# A graph's steps are model calls: from sub-millisecond (loopback, small models) to minutes.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Tally:
    """One node's or step's calls: how many, their duration histogram, failures by code."""

    __slots__ = ("duration", "errors", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.duration = HistogramTally(_LATENCY_BUCKETS)
        self.errors: dict[str, int] = {}

    def observe(self, seconds: float, code: int) -> None:
        self.requests += 1
        self.duration.observe(seconds)
        if not 200 <= code < 300:
            key = str(code)
            self.errors[key] = self.errors.get(key, 0) + 1


class GraphMetrics:
    """The router's counters and histograms; one per registry (the names are unique in it).

    A request observes a node and each of its steps, on the event loop's hot path, so the
    counts are plain numbers kept here (no lock, no child object per observation) and
    written out as Prometheus families when the registry is scraped.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._nodes: dict[tuple[str, str], Tally] = {}
        self._steps: dict[tuple[str, str, str, str], Tally] = {}
        registry.register(self)

    def node_tally(self, graph: str, node: str) -> Tally:
        """Where a node's requests are counted: a router asks once, then observes it."""
        key = (graph, node)
        tally = self._nodes.get(key)
        if tally is None:
            tally = self._nodes[key] = Tally()
        return tally

    def step_tally(self, graph: str, node: str, number: int, name: str) -> Tally:
        """Where a step's calls are counted: a router asks once, then observes it."""
        key = (graph, node, str(number), name)
        tally = self._steps.get(key)
        if tally is None:
            tally = self._steps[key] = Tally()
        return tally

    def observe_node(self, graph: str, node: str, seconds: float, code: int) -> None:
        """One node request: ``code`` is its answer's status, or the failure's."""
        self.node_tally(graph, node).observe(seconds, code)

    def observe_step(
        self, graph: str, node: str, number: int, name: str, seconds: float, code: int
    ) -> None:
        """One step call: ``code`` is the step's status, or the failure's."""
        self.step_tally(graph, node, number, name).observe(seconds, code)

    # -- the registry's collector --

    def describe(self) -> list[Metric]:
        return list(self._families((), ()))

    def collect(self) -> list[Metric]:
        # Copied first: a scrape in another thread sees each tally as it was.
        return list(self._families(list(self._nodes.items()), list(self._steps.items())))

    def _families(
        self,
        nodes: Iterable[tuple[tuple[str, ...], Tally]],
        steps: Iterable[tuple[tuple[str, ...], Tally]],
    ) -> Iterator[Metric]:
        node_labels = ["graph", "node"]
        step_labels = ["graph", "node", "step", "name"]
        yield from _tally_families(
            "modelhost_graph_node",
            ("Requests a graph node handled.",
             "Node requests that ended in a non-2xx answer or a failure, by status code.",
             "Time a graph node took, its steps included."),
            node_labels,
            nodes,
        )  # fmt: skip
        yield from _tally_families(
            "modelhost_graph_step",
            ("Calls a graph step made (its service, URL or node).",
             "Step calls that ended in a non-2xx answer or a failure, by status code.",
             "Time a graph step took, from the call to its whole answer."),
            step_labels,
            steps,
        )  # fmt: skip


def _tally_families(
    prefix: str,
    documentation: tuple[str, str, str],
    labels: list[str],
    tallies: Iterable[tuple[tuple[str, ...], Tally]],
) -> Iterator[Metric]:
    """A set of tallies as ``<prefix>_requests``, ``_errors`` and ``_duration_seconds``."""
    tallies = list(tallies)
    yield counter_family(
        f"{prefix}_requests", documentation[0], labels, ((k, t.requests) for k, t in tallies)
    )
    yield counter_family(
        f"{prefix}_errors",
        documentation[1],
        [*labels, "code"],
        (((*k, code), n) for k, t in tallies for code, n in list(t.errors.items())),
    )
    yield histogram_family(
        f"{prefix}_duration_seconds",
        documentation[2],
        labels,
        _LATENCY_BUCKETS,
        ((k, t.duration) for k, t in tallies),
    )


class RouterLoad:
    """A router process's load under the model server's names, for the autoscalers.

    The operator's HPA and KEDA queries read ``modelhost_requests_in_flight`` (concurrency) and
    ``modelhost_requests_total`` (rps) of a revision's pods, as they do a model server's; a
    router in the gateway's process has the gateway's metrics instead and takes none.
    """

    def __init__(self, registry: CollectorRegistry, graph: str) -> None:
        self.in_flight = Gauge(
            "modelhost_requests_in_flight",
            "Requests being handled now.",
            ("protocol",),
            registry=registry,
        )
        self.requests = Counter(
            "modelhost_requests",
            "Requests handled, by model, protocol, endpoint and status.",
            ("model", "protocol", "endpoint", "status"),
            registry=registry,
        )
        self._graph = graph

    def handled(self, protocol: str, endpoint: str, status: int) -> None:
        self.requests.labels(self._graph, protocol, endpoint, str(status)).inc()
