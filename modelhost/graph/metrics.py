"""Prometheus metrics of a graph router, per node and per step, in a registry given to it.

KServe's router exports none (it logs each node's and step's elapsed time); these answer the
same question on a dashboard: which node or step is slow or failing. Labels are bounded by the
graph's spec: ``graph``, ``node``, and for steps ``step`` (its number in the node, from 1) and
``name`` (its ``name``, else its service, node or URL). ``code`` on the error counters is the
HTTP status the failure surfaced as (a step's own non-2xx status, or 502/503/504).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GraphMetrics", "RouterLoad"]

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


class GraphMetrics:
    """The router's counters and histograms; one per registry (the names are unique in it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Each label set's children, found once: a request observes a node and its steps.
        self._nodes: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._steps: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        node_labels = ("graph", "node")
        step_labels = ("graph", "node", "step", "name")
        self.node_requests = Counter(
            "modelhost_graph_node_requests",
            "Requests a graph node handled.",
            node_labels,
            registry=registry,
        )
        self.node_errors = Counter(
            "modelhost_graph_node_errors",
            "Node requests that ended in a non-2xx answer or a failure, by status code.",
            (*node_labels, "code"),
            registry=registry,
        )
        self.node_duration = Histogram(
            "modelhost_graph_node_duration_seconds",
            "Time a graph node took, its steps included.",
            node_labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.step_requests = Counter(
            "modelhost_graph_step_requests",
            "Calls a graph step made (its service, URL or node).",
            step_labels,
            registry=registry,
        )
        self.step_errors = Counter(
            "modelhost_graph_step_errors",
            "Step calls that ended in a non-2xx answer or a failure, by status code.",
            (*step_labels, "code"),
            registry=registry,
        )
        self.step_duration = Histogram(
            "modelhost_graph_step_duration_seconds",
            "Time a graph step took, from the call to its whole answer.",
            step_labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_node(self, graph: str, node: str, seconds: float, code: int) -> None:
        """One node request: ``code`` is its answer's status, or the failure's."""
        key = (graph, node)
        children = self._nodes.get(key)
        if children is None:
            children = self._nodes[key] = (
                self.node_requests.labels(*key),
                self.node_duration.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)
        if not 200 <= code < 300:
            self.node_errors.labels(graph, node, str(code)).inc()

    def observe_step(
        self, graph: str, node: str, number: int, name: str, seconds: float, code: int
    ) -> None:
        """One step call: ``code`` is the step's status, or the failure's."""
        key = (graph, node, str(number), name)
        children = self._steps.get(key)
        if children is None:
            children = self._steps[key] = (
                self.step_requests.labels(*key),
                self.step_duration.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)
        if not 200 <= code < 300:
            self.step_errors.labels(*key, str(code)).inc()


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
