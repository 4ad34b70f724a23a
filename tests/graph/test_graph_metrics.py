"""The router's metrics: plain tallies, written out as prometheus-client writes its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from modelhost.graph import GraphMetrics
from modelhost.graph.metrics import _LATENCY_BUCKETS

# Bucket bounds themselves, values between and past them: the "le" edges are inclusive.
SECONDS = [0.0005, 0.0004, 0.001, 0.0011, 0.3, 60.0, 61.0, 0.0]


def samples(registry: CollectorRegistry) -> set[str]:
    """The exposition's sample lines, without the ``_created`` ones (the tallies have none)."""
    lines = generate_latest(registry).decode().splitlines()
    return {line for line in lines if line and not line.startswith("#") and "_created" not in line}


def test_the_tallies_read_as_prometheus_clients_own_counter_and_histogram() -> None:
    ours = GraphMetrics(CollectorRegistry())
    reference = CollectorRegistry()
    labels = ("graph", "node", "step", "name")
    requests = Counter("modelhost_graph_step_requests", "", labels, registry=reference).labels(
        "g", "root", "2", "b"
    )
    duration = Histogram(
        "modelhost_graph_step_duration_seconds",
        "",
        labels,
        buckets=_LATENCY_BUCKETS,
        registry=reference,
    ).labels("g", "root", "2", "b")
    failures = Counter("modelhost_graph_step_errors", "", (*labels, "code"), registry=reference)
    for index, seconds in enumerate(SECONDS):
        code = 503 if index % 3 == 0 else 200
        ours.observe_step("g", "root", 2, "b", seconds, code)
        requests.inc()
        duration.observe(seconds)
        if code != 200:
            failures.labels("g", "root", "2", "b", str(code)).inc()
    step_lines = {
        line for line in samples(ours.registry) if line.startswith("modelhost_graph_step")
    }
    assert step_lines == samples(reference)


def test_node_failures_are_counted_by_code() -> None:
    metrics = GraphMetrics(CollectorRegistry())
    for code in (200, 404, 503, 503, 299):
        metrics.observe_node("g", "root", 0.01, code)
    lines = samples(metrics.registry)
    assert 'modelhost_graph_node_requests_total{graph="g",node="root"} 5.0' in lines
    assert 'modelhost_graph_node_errors_total{code="503",graph="g",node="root"} 2.0' in lines
    assert 'modelhost_graph_node_errors_total{code="404",graph="g",node="root"} 1.0' in lines
    assert not any('code="200"' in line or 'code="299"' in line for line in lines)
    assert 'modelhost_graph_node_duration_seconds_count{graph="g",node="root"} 5.0' in lines
