"""The tallied metrics write what prometheus-client's own metrics write for the same values.

A one-process server keeps its series as plain numbers (``modelhost.server.metric_tallies``);
a server with worker processes keeps prometheus-client's. Fed the same observations, both
must expose the same samples, line for line (the tallies write no ``_created`` samples).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from modelhost.server import metrics as server_metrics
from modelhost.server.metric_tallies import HistogramTally, Level
from modelhost.server.metrics import Metrics


def _samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if line and "_created" not in line)


def _feed(series: server_metrics._Tallied | server_metrics._Shared) -> None:
    # Values on bucket bounds, between them, past the last one, and at zero.
    for seconds in (0.0, 0.0005, 0.0007, 0.001, 0.3, 29.0, 31.0, 1000.0):
        series.observe_request("iris", "v2", "infer", "200", seconds)
    series.observe_request("iris", "v2", "infer", "400", 0.002)
    series.observe_request("iris", "v1", "predict", "200", 0.004)
    series.observe_request("", "grpc", "live", "OK", 0.0)
    for step, seconds in (("predict", 0.005), ("predict", 0.08), ("preprocess", 11.0)):
        series.observe_step(step, "iris", seconds)
    series.observe_step("explain", "other", 0.5)
    for rows in (1, 3, 64, 65, 2000):
        series.batch("iris", 0).observe(rows)
    series.batch("iris", 1).observe(0.0001)
    gauge = series.in_flight("v2")
    gauge.inc()
    gauge.inc()
    gauge.dec()
    series.in_flight("grpc")


def test_tallies_expose_what_prometheus_client_exposes() -> None:
    tallied, shared = CollectorRegistry(), CollectorRegistry()
    _feed(server_metrics._Tallied(tallied))
    _feed(server_metrics._Shared(shared))
    ours, theirs = _samples(tallied), _samples(shared)
    assert any(line.startswith("modelhost_request_duration_seconds_bucket") for line in ours)
    assert any(line.startswith("request_predict_seconds_bucket") for line in ours)
    assert ours == theirs


def test_a_forgotten_model_leaves_no_series_in_either() -> None:
    for series in (
        server_metrics._Tallied(CollectorRegistry()),
        server_metrics._Shared(CollectorRegistry()),
    ):
        _feed(series)
        assert series.model_label_children() == 4 + 3 + 2 + 2 + 1
        series.forget_model("iris")
        series.forget_model("other")
        assert series.model_label_children() == 2  # the "" model's request and its duration
        series.forget_model("")
        assert series.model_label_children() == 0


def test_the_server_metrics_are_tallied_in_one_process() -> None:
    metrics = Metrics()
    metrics.observe_request("iris", "v2", "infer", 200, 0.001)
    gauge = metrics.in_flight("v2")
    assert isinstance(gauge, Level)
    assert isinstance(metrics.batch_size("iris"), HistogramTally)
    gauge.inc()
    assert metrics.in_flight_now("v2") == 1
    text = metrics.exposition(None)[0].decode()
    assert (
        'modelhost_requests_total{endpoint="infer",model="iris",protocol="v2",status="200"} 1.0'
        in text
    )
    assert 'modelhost_requests_in_flight{protocol="v2"} 1.0' in text


def test_a_histogram_tally_counts_a_value_on_a_bound_in_that_bucket() -> None:
    tally = HistogramTally((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 2.0, 2.5):
        tally.observe(value)
    assert tally.buckets == [2, 2, 1]
    assert tally.count == 5
    assert tally.total == 7.5
