"""The gateway's Prometheus metrics: requests, latency, cold starts and replicas per revision.

Named after what Knative's activator and queue-proxy export, under a ``modelhost_gateway_``
prefix; the registry is the platform's own, so that two platforms in one process (tests) do
not collide. Every relayed request is counted on the gateway's event loop, so its counts are
plain numbers per revision (:class:`RevisionTally`: no lock and no bucket walk in Python per
request), written out when scraped; cold starts and replicas are read from the revisions then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelhost.server.metric_tallies import HistogramTally, histogram_family

__all__ = ["ColdStartCount", "GatewayMetrics", "ReplicaCount", "RevisionTally"]

# (namespace, service, component, revision, state, count)
ReplicaCount = tuple[str, str, str, str, str, int]
# (namespace, service, component, revision, requests that waited for a replica to start)
ColdStartCount = tuple[str, str, str, str, int]

_LABELS = ("namespace", "service", "component", "revision")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RevisionTally:
    """One revision's answered requests: how many of each status, and their latency."""

    __slots__ = ("codes", "latency")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.latency = HistogramTally(_LATENCY_BUCKETS)

    def observe(self, status: int, seconds: float) -> None:
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1
        self.latency.observe(seconds)


class GatewayMetrics:
    def __init__(
        self,
        replicas: Callable[[], Iterable[ReplicaCount]],
        cold_starts: Callable[[], Iterable[ColdStartCount]] = tuple,
    ) -> None:
        self.registry = CollectorRegistry()
        self._tallies: dict[tuple[str, str, str, str], RevisionTally] = {}
        self._replicas = replicas
        self._cold_starts = cold_starts
        self.registry.register(_GatewayCollector(self))

    def tally(self, namespace: str, service: str, component: str, revision: str) -> RevisionTally:
        """Where a revision's requests are counted: asked once per revision, then observed."""
        key = (namespace, service, component, revision)
        found = self._tallies.get(key)
        if found is None:
            found = self._tallies[key] = RevisionTally()
        return found

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = exposition.choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def families(self) -> Iterator[Metric]:
        # Copied first: a scrape in another thread sees each tally as it was.
        tallies = list(self._tallies.items())
        requests = CounterMetricFamily(
            "modelhost_gateway_requests",
            "Requests the gateway answered, by revision and HTTP status code.",
            labels=(*_LABELS, "code"),
        )
        for labels, tally in tallies:
            for code, count in sorted(tally.codes.items()):
                requests.add_metric((*labels, str(code)), count)
        yield requests
        yield histogram_family(
            "modelhost_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its last response byte.",
            _LABELS,
            _LATENCY_BUCKETS,
            ((labels, tally.latency) for labels, tally in tallies),
        )
        cold = CounterMetricFamily(
            "modelhost_gateway_cold_starts",
            "Requests that found their revision scaled to zero and waited for a replica.",
            labels=_LABELS,
        )
        for namespace, service, component, revision, count in self._cold_starts():
            cold.add_metric((namespace, service, component, revision), count)
        yield cold
        replicas = GaugeMetricFamily(
            "modelhost_gateway_replicas",
            "Replicas of each revision, by state (Starting, Ready, Draining).",
            labels=(*_LABELS, "state"),
        )
        for namespace, service, component, revision, state, count in self._replicas():
            replicas.add_metric((namespace, service, component, revision, state), count)
        yield replicas


class _GatewayCollector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()
