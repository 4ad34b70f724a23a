"""The embedded platform's pod autoscaler, replayed second by second on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from modelhost.control.plan_types import ScalingPolicy
from modelhost.errors import InvalidInput, Unsupported
from modelhost.local.autoscaler import Autoscaler


class FakeClock:
    def __init__(self) -> None:
        # Far from zero, so no arithmetic happens to work only because time starts at 0.
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def kpa(**fields: Any) -> ScalingPolicy:
    values: dict[str, Any] = {
        "autoscaler": "kpa",
        "min_replicas": 1,
        "max_replicas": 0,
        "metric": "concurrency",
        "target": 10.0,
        "target_utilization": 1.0,
        "stable_window_s": 60.0,
        "panic_window_s": 6.0,
        "panic_threshold": 2.0,
        "scale_to_zero_grace_s": 30.0,
    }
    values.update(fields)
    return ScalingPolicy(**values)


def fixed(autoscaler: str, minimum: int, maximum: int, **fields: Any) -> ScalingPolicy:
    values: dict[str, Any] = {
        "autoscaler": autoscaler,
        "min_replicas": minimum,
        "max_replicas": maximum,
        "metric": "cpu",
        "target": 80.0,
        "stable_window_s": 300.0,
        "panic_window_s": 0.0,
        "panic_threshold": 0.0,
        "scale_to_zero_grace_s": 0.0,
    }
    values.update(fields)
    return ScalingPolicy(**values)


def scaler_for(policy: ScalingPolicy) -> tuple[Autoscaler, FakeClock]:
    clock = FakeClock()
    return Autoscaler(policy, clock=clock), clock


def drive(
    scaler: Autoscaler,
    clock: FakeClock,
    seconds: int,
    concurrency: float,
    *,
    ready: int,
    requests: int = 0,
    follow: bool = True,
    panics: list[bool] | None = None,
) -> list[int]:
    """One sample and one decision a second; ``follow``: the wanted replicas are ready at once."""
    decisions = []
    for _ in range(seconds):
        clock.advance(1.0)
        scaler.record(concurrency, requests)
        want = scaler.desired(ready)
        decisions.append(want)
        if panics is not None:
            panics.append(scaler.panicking)
        if follow:
            ready = want
    return decisions


# --- initial scale and no data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimum", "maximum", "initial", "expected"),
    [(0, 0, 1, 1), (0, 0, 0, 0), (2, 0, 1, 2), (1, 3, 5, 3), (0, 4, 3, 3)],
)
def test_initial_replicas_are_clamped_to_min_and_max(
    minimum: int, maximum: int, initial: int, expected: int
) -> None:
    policy = kpa(min_replicas=minimum, max_replicas=maximum, initial_replicas=initial)
    assert Autoscaler(policy, clock=FakeClock()).initial == expected


def test_without_samples_it_keeps_what_runs_within_bounds() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=2, max_replicas=5))
    clock.advance(500.0)
    assert scaler.desired(4) == 4
    assert scaler.desired(9) == 5
    assert scaler.desired(0) == 2
    assert not scaler.panicking
    idle, _ = scaler_for(kpa(min_replicas=0))
    assert idle.desired(0) == 0


# --- stable mode -----------------------------------------------------------------------------


def test_steady_load_at_the_target_keeps_the_replicas() -> None:
    # 3 replicas at 70% of 10 each: exactly the target, which must not ask for a fourth.
    scaler, clock = scaler_for(kpa(target_utilization=0.7))
    panics: list[bool] = []
    decisions = drive(scaler, clock, 180, 21.0, ready=3, panics=panics)
    assert set(decisions) == {3}
    assert not any(panics)
    assert scaler.observed() == pytest.approx((21.0, 21.0))


def test_float_rounding_at_the_target_does_not_add_a_replica() -> None:
    # 2.1 / 0.7 is 3.0000000000000004 in floating point.
    scaler, clock = scaler_for(kpa(target=1.0, target_utilization=0.7))
    assert set(drive(scaler, clock, 120, 2.1, ready=3)) == {3}


def test_a_sample_taken_as_the_revision_is_created_counts() -> None:
    scaler, _ = scaler_for(kpa(min_replicas=0))
    scaler.record(30.0)
    assert scaler.desired(0) == 3


def test_knative_defaults_divide_by_target_times_utilization() -> None:
    scaler, clock = scaler_for(kpa(target=100.0, target_utilization=0.7, min_replicas=0))
    assert scaler.target_value == pytest.approx(70.0)
    assert drive(scaler, clock, 60, 141.0, ready=3)[-1] == 3
    assert drive(scaler, clock, 120, 140.0, ready=3)[-1] == 2


def test_container_concurrency_caps_a_higher_target() -> None:
    scaler, clock = scaler_for(kpa(target=100.0, container_concurrency=10))
    assert scaler.target_value == 10.0
    assert drive(scaler, clock, 60, 40.0, ready=4)[-1] == 4


def test_more_load_scales_up_as_the_stable_window_averages_it() -> None:
    scaler, clock = scaler_for(kpa())
    assert set(drive(scaler, clock, 60, 40.0, ready=4)) == {4}
    panics: list[bool] = []
    decisions = drive(scaler, clock, 60, 60.0, ready=4, panics=panics)
    # The window average climbs from 40 to 60: one more replica at once, the sixth once
    # the average passes 50 (after half the window), and no panic at 1.5 times the load.
    assert decisions[0] == 5
    assert decisions[29] == 5
    assert decisions[30] == 6
    assert decisions[-1] == 6
    assert decisions == sorted(decisions)
    assert not any(panics)


def test_doubled_load_below_the_panic_threshold_takes_a_stable_window() -> None:
    scaler, clock = scaler_for(kpa(panic_threshold=3.0))
    drive(scaler, clock, 60, 40.0, ready=4)
    panics: list[bool] = []
    decisions = drive(scaler, clock, 70, 80.0, ready=4, panics=panics)
    assert decisions[29] == 6
    assert decisions[58] == 8
    assert decisions[-1] == 8
    assert not any(panics)


# --- panic mode ------------------------------------------------------------------------------


def test_doubled_load_on_the_same_replicas_reaches_the_panic_threshold() -> None:
    scaler, clock = scaler_for(kpa())
    drive(scaler, clock, 60, 40.0, ready=4)
    panics: list[bool] = []
    decisions = drive(scaler, clock, 6, 80.0, ready=4, follow=False, panics=panics)
    # After 5 s the 6 s panic window averages 73.3: 8 replicas, twice the 4 ready.
    assert panics == [False, False, False, False, True, True]
    assert decisions[3] == 5
    assert decisions[4] == 8


def test_a_burst_panics_within_the_panic_window_and_never_scales_down_in_panic() -> None:
    scaler, clock = scaler_for(kpa())
    assert set(drive(scaler, clock, 60, 10.0, ready=1)) == {1}
    panics: list[bool] = []
    burst = drive(scaler, clock, 3, 100.0, ready=1, follow=False, panics=panics)
    # The stable window alone would ask for 2 after 3 s; the panic window asks for 6.
    assert scaler.observed()[0] == pytest.approx(14.5)
    assert burst == [3, 4, 6]
    assert panics == [True, True, True]

    # The burst is over and 6 replicas run: the load wants 1, but panic holds 6 until a
    # whole stable window has passed since the last decision over the threshold.
    for _ in range(59):
        clock.advance(1.0)
        scaler.record(10.0)
        assert scaler.desired(6) == 6
        assert scaler.panicking
    clock.advance(1.0)
    scaler.record(10.0)
    assert scaler.desired(6) == 3  # out of panic, down at most by half
    assert not scaler.panicking
    assert [scaler.desired(3), scaler.desired(2), scaler.desired(1)] == [2, 1, 1]


def test_panic_holds_the_replicas_the_caller_already_runs() -> None:
    scaler, clock = scaler_for(kpa())
    drive(scaler, clock, 60, 10.0, ready=1)
    drive(scaler, clock, 3, 100.0, ready=1, follow=False)
    assert scaler.panicking
    clock.advance(1.0)
    scaler.record(10.0)
    assert scaler.desired(9) == 9


def test_panic_lasts_a_stable_window_after_the_last_reason_to_panic() -> None:
    scaler, clock = scaler_for(kpa())
    drive(scaler, clock, 60, 10.0, ready=1)
    drive(scaler, clock, 3, 100.0, ready=1, follow=False)
    # The burst goes on and the replicas have not started: each decision renews the panic.
    drive(scaler, clock, 30, 100.0, ready=1, follow=False)
    assert scaler.panicking
    renewed = clock.now
    drive(scaler, clock, 59, 0.0, ready=10, follow=False)
    assert scaler.panicking
    assert clock.now - renewed == 59.0
    drive(scaler, clock, 1, 0.0, ready=10, follow=False)
    assert not scaler.panicking


def test_requests_held_by_the_activator_at_zero_replicas_size_the_scale_up() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=0))
    clock.advance(1.0)
    scaler.record(50.0, requests=50)
    assert scaler.desired(0) == 5
    assert scaler.panicking
    assert scaler.activate() == 5


# --- bounds and rates ------------------------------------------------------------------------


def test_max_replicas_clamps_stable_and_panic_decisions() -> None:
    scaler, clock = scaler_for(kpa(max_replicas=5))
    panics: list[bool] = []
    decisions = drive(scaler, clock, 30, 1000.0, ready=1, panics=panics)
    assert max(decisions) == 5
    assert decisions[-1] == 5
    assert panics[0]
    assert scaler.desired(20) == 5


def test_scale_down_is_at_most_halving_per_decision() -> None:
    scaler, clock = scaler_for(kpa())
    assert drive(scaler, clock, 60, 100.0, ready=10)[-1] == 10
    decisions = drive(scaler, clock, 61, 0.0, ready=10, follow=False)
    assert min(decisions) == 5
    assert decisions[-1] == 5
    assert scaler.observed() == (0.0, 0.0)
    assert [scaler.desired(n) for n in (9, 5, 3, 2, 1)] == [5, 3, 2, 1, 1]


def test_scale_up_is_not_limited_below_a_thousandfold() -> None:
    scaler, clock = scaler_for(kpa())
    assert drive(scaler, clock, 1, 5000.0, ready=1)[-1] == 500


def test_a_gateway_that_stops_sampling_counts_as_no_load() -> None:
    scaler, clock = scaler_for(kpa())
    drive(scaler, clock, 60, 40.0, ready=4)
    clock.advance(30.0)
    assert scaler.observed() == pytest.approx((20.0, 0.0))
    assert scaler.desired(4) == 2
    clock.advance(30.0)
    assert scaler.desired(2) == 1


# --- scale to zero ---------------------------------------------------------------------------


def test_idle_revision_scales_to_zero_after_the_stable_window_and_grace() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=0))
    assert scaler.policy.scale_to_zero
    drive(scaler, clock, 10, 5.0, ready=1)
    last_request = clock.now
    decisions = drive(scaler, clock, 89, 0.0, ready=1)
    assert set(decisions) == {1}
    assert drive(scaler, clock, 1, 0.0, ready=1) == [0]
    assert clock.now - last_request == 90.0
    assert drive(scaler, clock, 5, 0.0, ready=0) == [0] * 5


def test_a_request_restarts_the_idle_time() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=0))
    drive(scaler, clock, 10, 5.0, ready=1)
    drive(scaler, clock, 80, 0.0, ready=1)
    clock.advance(1.0)
    scaler.record(0.0, requests=1)
    assert scaler.desired(1) == 1
    assert set(drive(scaler, clock, 89, 0.0, ready=1)) == {1}
    assert drive(scaler, clock, 1, 0.0, ready=1) == [0]


def test_an_initial_replica_without_traffic_is_kept_a_window_and_grace() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=0, initial_replicas=1))
    assert scaler.initial == 1
    assert set(drive(scaler, clock, 89, 0.0, ready=1)) == {1}
    assert drive(scaler, clock, 1, 0.0, ready=1) == [0]


def test_min_replicas_one_never_scales_to_zero() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=1))
    assert not scaler.policy.scale_to_zero
    drive(scaler, clock, 10, 5.0, ready=1)
    assert set(drive(scaler, clock, 1000, 0.0, ready=1)) == {1}


def test_activate_from_zero_starts_a_replica_and_keeps_it_for_the_request() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=0, initial_replicas=0))
    drive(scaler, clock, 200, 0.0, ready=0)
    assert scaler.desired(0) == 0
    assert scaler.activate() == 1
    # The replica is still starting (the caller may still say 0 ready): it must not be stopped.
    assert scaler.desired(0) == 1
    # The gateway's samples then carry the held request, served in 2 s.
    assert drive(scaler, clock, 2, 1.0, ready=1, requests=1) == [1, 1]
    assert set(drive(scaler, clock, 89, 0.0, ready=1)) == {1}
    assert drive(scaler, clock, 1, 0.0, ready=1) == [0]


def test_activate_starts_at_least_min_replicas() -> None:
    scaler, _ = scaler_for(kpa(min_replicas=2))
    assert scaler.activate() == 2


# --- requests per second ---------------------------------------------------------------------


def test_rps_metric_scales_on_arrivals_and_ignores_concurrency() -> None:
    scaler, clock = scaler_for(kpa(metric="rps", target=50.0))
    assert set(drive(scaler, clock, 60, 1000.0, ready=3, requests=150)) == {3}
    assert scaler.observed() == pytest.approx((150.0, 150.0))
    assert drive(scaler, clock, 60, 0.0, ready=3, requests=225)[-1] == 5


def test_rps_is_per_second_whatever_the_sampling_period() -> None:
    scaler, clock = scaler_for(kpa(metric="rps", target=50.0))
    for _ in range(120):
        clock.advance(0.5)
        scaler.record(1.0, requests=50)
    assert scaler.observed() == pytest.approx((100.0, 100.0))
    assert scaler.desired(2) == 2


# --- other autoscalers: a fixed count --------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (fixed("hpa", 2, 10), 2),
        (fixed("hpa", 0, 10), 1),
        (fixed("none", 3, 3, stable_window_s=0.0), 3),
        (fixed("external", 2, 0), 2),
        (fixed("keda", 4, 8), 4),
    ],
)
def test_non_kpa_autoscalers_hold_a_fixed_count(policy: ScalingPolicy, expected: int) -> None:
    scaler, clock = scaler_for(policy)
    assert set(drive(scaler, clock, 120, 500.0, ready=1, requests=500)) == {expected}
    assert scaler.desired(20) == expected
    assert not scaler.panicking
    assert scaler.activate() == expected


@pytest.mark.parametrize(
    ("policy", "hold_s"),
    [
        (fixed("keda", 0, 5), 300),
        (fixed("external", 0, 0), 300),
        (fixed("none", 0, 0, stable_window_s=0.0), 90),
    ],
)
def test_a_fixed_count_of_zero_still_serves_a_request(policy: ScalingPolicy, hold_s: int) -> None:
    scaler, clock = scaler_for(policy)
    clock.advance(1000.0)
    assert scaler.desired(0) == 0
    assert scaler.activate() == 1
    assert scaler.desired(0) == 1
    assert set(drive(scaler, clock, hold_s - 1, 0.0, ready=1)) == {1}
    assert drive(scaler, clock, 1, 0.0, ready=1) == [0]


# --- refused policies and samples ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"metric": "cpu"}, Unsupported),
        ({"target": 0.0}, InvalidInput),
        ({"target_utilization": 0.0}, InvalidInput),
        ({"panic_window_s": 0.0}, InvalidInput),
        ({"panic_threshold": 0.0}, InvalidInput),
        ({"min_replicas": 3, "max_replicas": 2}, InvalidInput),
        ({"min_replicas": -1}, InvalidInput),
        ({"scale_to_zero_grace_s": -1.0}, InvalidInput),
    ],
)
def test_unusable_policies_are_refused(fields: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Autoscaler(kpa(**fields), clock=FakeClock())


def test_negative_samples_are_refused() -> None:
    scaler, _ = scaler_for(kpa())
    with pytest.raises(InvalidInput):
        scaler.record(-1.0)
    with pytest.raises(InvalidInput):
        scaler.record(1.0, requests=-1)


def test_the_sample_history_is_trimmed_to_the_stable_window() -> None:
    scaler, clock = scaler_for(kpa())
    drive(scaler, clock, 1000, 10.0, ready=1)
    assert len(scaler._samples) <= 61


def test_a_changed_policy_takes_effect_with_the_load_seen_so_far() -> None:
    scaler, clock = scaler_for(kpa(min_replicas=1))
    for _ in range(120):  # idle for two stable windows: min 1 keeps one replica
        clock.advance(1)
        scaler.record(0.0)
    assert scaler.desired(1) == 1
    scaler.change_policy(kpa(min_replicas=0))
    # Idle for longer than the stable window plus grace already: to zero at once.
    assert scaler.desired(1) == 0
    scaler.change_policy(kpa(min_replicas=3))
    assert scaler.desired(0) == 3
    with pytest.raises(InvalidInput):
        scaler.change_policy(kpa(min_replicas=3, max_replicas=2))
