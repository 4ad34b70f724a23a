"""How many replicas one revision wants: Knative's pod autoscaler (KPA), without Kubernetes.

One :class:`Autoscaler` per revision. The gateway feeds it a sample about once a second
(:meth:`Autoscaler.record`) and the executor asks :meth:`Autoscaler.desired` how many replicas
to run. It is pure: no I/O, no threads, no asyncio, and time comes from an injected clock, so
the decisions can be replayed exactly.

The KPA rules kept here: the load (concurrency or requests per second) is averaged over a
stable window and a shorter panic window; a window asks for ``ceil(load / (target *
target_utilization))`` replicas; panic mode starts when the panic window asks for
``panic_threshold`` times the ready replicas, never scales down, and ends once a whole stable
window passes without that; scale-down is limited to halving per decision; a revision allowed
to scale to zero drops its last replica only after a stable window plus the scale-to-zero grace
period without traffic.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from modelhost.control.plan_types import ScalingPolicy
from modelhost.errors import InvalidInput, Unsupported

__all__ = ["Autoscaler"]

# Knative's config-autoscaler defaults: a decision may multiply the ready replicas by 1000 at
# most, and divide them by 2 at most.
_MAX_SCALE_UP_RATE = 1000.0
_MAX_SCALE_DOWN_RATE = 2.0

# The gateway's sampling period: the first sample has no previous one to measure from.
_SAMPLE_PERIOD_S = 1.0

# How long an autoscaler fixed at zero replicas keeps one after traffic when its policy has no
# windows of its own (``none``): Knative's default stable window plus grace period, so a
# replica started for a request is not stopped before it serves it.
_DEFAULT_IDLE_HOLD_S = 90.0

# Averages of floats are rarely exact: load exactly at the target must not ask for one more.
_EPSILON = 1e-9

_KPA_METRICS = ("concurrency", "rps")


class _Sample(NamedTuple):
    start: float
    end: float
    concurrency: float
    requests: int


class Autoscaler:
    """The replica count of one revision, decided as Knative's KPA does.

    Only ``kpa`` policies scale on load. The embedded platform cannot measure a process's cpu
    or memory cheaply, so ``hpa``, ``keda``, ``external`` and ``none`` hold a fixed count:
    ``min_replicas`` (at least 1 for ``hpa``, which cannot scale to zero), clamped to
    ``max_replicas``. Where that count is 0, a request (:meth:`activate`) still starts one
    replica, kept until the policy's stable window plus grace period passes without traffic.
    """

    def __init__(
        self, policy: ScalingPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._created = clock()
        self.change_policy(policy)
        self._samples: deque[_Sample] = deque()
        self._first_start: float | None = None
        self._last_end: float | None = None
        self._last_traffic: float | None = None
        self._panic_since: float | None = None
        self._panic_peak = 0

    def change_policy(self, policy: ScalingPolicy) -> None:
        """Follow a changed policy from the next decision on; the load seen so far is kept."""
        _check(policy)
        self.policy = policy
        self._kpa = policy.autoscaler == "kpa"
        # Samples are trimmed to the longer window; the panic window is normally the shorter.
        self._keep_s = max(policy.stable_window_s, policy.panic_window_s)

    @property
    def initial(self) -> int:
        """Replicas at the revision's creation: ``initial_replicas`` clamped to min and max."""
        return self._clamp(self.policy.initial_replicas)

    @property
    def panicking(self) -> bool:
        """Whether the latest :meth:`desired` decision was made in panic mode."""
        return self._panic_since is not None

    @property
    def target_value(self) -> float:
        """The load one replica should carry: concurrency or requests per second."""
        target = self.policy.target
        if self.policy.metric == "concurrency" and self.policy.container_concurrency > 0:
            # A soft target above the hard limit could never be reached by one replica.
            target = min(target, float(self.policy.container_concurrency))
        return target * self.policy.target_utilization

    def record(self, concurrency: float, requests: int = 0) -> None:
        """One gateway sample taken now.

        ``concurrency`` is the average number of requests in flight since the previous sample
        (requests the activator holds while no replica is ready included), ``requests`` how
        many arrived since then.
        """
        if concurrency < 0 or requests < 0:
            raise InvalidInput("an autoscaler sample cannot be negative")
        now = self._clock()
        if self._last_end is not None:
            start = min(self._last_end, now)
        elif now > self._created:
            # Nothing was measured for this revision before it existed.
            start = now - min(_SAMPLE_PERIOD_S, now - self._created)
        else:
            start = now - _SAMPLE_PERIOD_S
        if self._first_start is None:
            self._first_start = start
        self._samples.append(_Sample(start, now, float(concurrency), int(requests)))
        self._last_end = now
        if concurrency > 0 or requests > 0:
            self._last_traffic = now
        self._trim(now)

    def activate(self) -> int:
        """Replicas to start at once for a request that found none ready (at least 1).

        The request counts as traffic, so the revision is not scaled back to zero before the
        replica started for it can serve it.
        """
        self._last_traffic = self._clock()
        return max(1, self.desired(0))

    def desired(self, ready: int) -> int:
        """Replicas wanted now, given ``ready`` replicas ready or starting."""
        ready = max(0, ready)
        now = self._clock()
        self._trim(now)
        if not self._kpa:
            return self._keep_one_for_traffic(self._fixed(), ready, now)
        if self._first_start is None:
            # No window has data yet: nothing to justify scaling down what is running.
            self._end_panic()
            return self._keep_one_for_traffic(self._clamp(ready), ready, now)
        return self._decide(ready, now)

    def observed(self) -> tuple[float, float]:
        """The load over the stable and the panic window, in the policy's metric."""
        return self._observed(self._clock())

    def _observed(self, now: float) -> tuple[float, float]:
        return (
            self._average(self.policy.stable_window_s, now),
            self._average(self.policy.panic_window_s, now),
        )

    def _decide(self, ready: int, now: float) -> int:
        policy = self.policy
        stable_load, panic_load = self._observed(now)
        stable_want = _replicas(stable_load, self.target_value)
        panic_want = _replicas(panic_load, self.target_value)
        # Knative sizes from at least one replica, so a revision at zero can panic too.
        base = max(ready, 1)

        if panic_want >= policy.panic_threshold * base:
            if self._panic_since is None:
                self._panic_peak = 0
            # Each moment over the threshold restarts the stable window panic must outlast.
            self._panic_since = now
        elif self._panic_since is not None and now - self._panic_since >= policy.stable_window_s:
            self._end_panic()

        if policy.scale_to_zero and not self.panicking and self._idle_for(now) >= self._hold_s():
            return 0

        up_limit = math.ceil(_MAX_SCALE_UP_RATE * base)
        down_limit = math.ceil(ready / _MAX_SCALE_DOWN_RATE)
        stable_want = min(max(stable_want, down_limit), up_limit)
        panic_want = min(max(panic_want, down_limit), up_limit)

        want = stable_want
        if self.panicking:
            # The stable window can see more than the panic one (a burst that just ended);
            # provision for the larger, and never give back replicas while panicking.
            self._panic_peak = max(self._panic_peak, stable_want, panic_want, ready)
            want = self._panic_peak
        return self._keep_one_for_traffic(self._clamp(want), ready, now)

    def _fixed(self) -> int:
        minimum = self.policy.min_replicas
        if minimum == 0 and self.policy.autoscaler == "hpa":
            return self._clamp(1)
        return self._clamp(minimum)

    def _keep_one_for_traffic(self, want: int, ready: int, now: float) -> int:
        """``want``, but 1 instead of 0 while the last traffic is too recent to drop it.

        A replica running since the revision's creation is kept as long as one started for a
        request would be.
        """
        if want > 0 or self._idle_for(now) >= self._hold_s():
            return want
        if ready > 0 or self._last_traffic is not None:
            return self._clamp(1)
        return want

    def _idle_for(self, now: float) -> float:
        since = self._last_traffic if self._last_traffic is not None else self._created
        return now - since

    def _hold_s(self) -> float:
        hold = self.policy.stable_window_s + self.policy.scale_to_zero_grace_s
        return hold if hold > 0 else _DEFAULT_IDLE_HOLD_S

    def _end_panic(self) -> None:
        self._panic_since = None
        self._panic_peak = 0

    def _clamp(self, count: int) -> int:
        count = max(count, self.policy.min_replicas)
        if self.policy.max_replicas > 0:
            count = min(count, self.policy.max_replicas)
        return count

    def _trim(self, now: float) -> None:
        horizon = now - self._keep_s
        while self._samples and self._samples[0].end <= horizon:
            self._samples.popleft()

    def _average(self, window_s: float, now: float) -> float:
        """The metric averaged over the last ``window_s`` seconds.

        Time since the last sample counts as no load (a gateway that stopped sampling saw no
        requests); before the first sample there is no data, so a young revision's average
        covers only the time it has been sampled.
        """
        if self._first_start is None or window_s <= 0:
            return 0.0
        horizon = now - window_s
        span = now - max(horizon, self._first_start)
        if span <= 0:
            return 0.0
        by_rps = self.policy.metric == "rps"
        total = 0.0
        for sample in reversed(self._samples):
            if sample.end <= horizon:
                break
            overlap = max(0.0, min(sample.end, now) - max(sample.start, horizon))
            if by_rps:
                length = sample.end - sample.start
                # Arrivals are spread evenly over the sample's interval.
                total += sample.requests * (overlap / length if length > 0 else 1.0)
            else:
                total += sample.concurrency * overlap
        return total / span


def _replicas(load: float, target: float) -> int:
    return max(0, math.ceil(load / target - _EPSILON))


def _check(policy: ScalingPolicy) -> None:
    """Refuse a policy the decisions cannot follow, rather than deciding nonsense."""
    if policy.min_replicas < 0 or policy.max_replicas < 0:
        raise InvalidInput("min and max replicas cannot be negative")
    if 0 < policy.max_replicas < policy.min_replicas:
        raise InvalidInput(
            f"min replicas {policy.min_replicas} is above max replicas {policy.max_replicas}"
        )
    if policy.autoscaler != "kpa":
        return
    if policy.metric not in _KPA_METRICS:
        raise Unsupported(
            f"the Knative autoscaler scales on concurrency or rps, not {policy.metric!r}"
        )
    positive = {
        "target": policy.target,
        "target utilization": policy.target_utilization,
        "stable window": policy.stable_window_s,
        "panic window": policy.panic_window_s,
        "panic threshold": policy.panic_threshold,
    }
    for name, value in positive.items():
        if not value > 0:
            raise InvalidInput(f"the autoscaler's {name} must be positive, not {value}")
    if policy.scale_to_zero_grace_s < 0:
        raise InvalidInput("the scale-to-zero grace period cannot be negative")
