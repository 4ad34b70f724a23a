"""Counters, gauges and histograms kept as plain numbers, written out when scraped.

prometheus-client's children take a lock for every increment and walk their buckets in
Python for every observation: several of those per request cost microseconds on the hot
path (bench/RESULTS.md, run 15). A server's metrics are written by its event loop's thread
only, so plain numbers do; a registry collector turns them into the families
prometheus-client writes (the same names, labels, buckets and ``le`` values; no
``_created`` samples). A server with several worker processes keeps prometheus-client's
multiprocess values instead (``modelhost.server.metrics``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

__all__ = [
    "HistogramTally",
    "Level",
    "counter_family",
    "gauge_family",
    "histogram_family",
]


class HistogramTally:
    """One histogram's observations: per-bucket counts (not cumulative) and their sum."""

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        # The last bucket is +Inf's.
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        # A value on a bound counts in that bound's bucket (``le``), as prometheus-client's.
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1

    @property
    def count(self) -> int:
        return sum(self.buckets)


class Level:
    """A gauge's value, moved up and down (requests in flight)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


def counter_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    counts: Iterable[tuple[tuple[str, ...], float]],
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for values, count in counts:
        family.add_metric(list(values), count)
    return family


def gauge_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    levels: Iterable[tuple[tuple[str, ...], Level]],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, level in levels:
        family.add_metric(list(values), level.value)
    return family


def histogram_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    bounds: Sequence[float],
    tallies: Iterable[tuple[tuple[str, ...], HistogramTally]],
) -> HistogramMetricFamily:
    # The ``le`` labels, written as prometheus-client writes a Histogram's.
    le = [floatToGoString(bound) for bound in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, tally in tallies:
        cumulative = list(itertools.accumulate(list(tally.buckets)))
        family.add_metric(list(values), list(zip(le, cumulative, strict=True)), tally.total)
    return family
