"""Rollouts under a steady load: canary, rollback, promotion, rolling update, a crash, zero."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from platform_fixtures import RunningPlatform, is_ready, start_platform, stop_platform, traffic

SAMPLES = Path(__file__).resolve().parents[1] / "control" / "samples"
ROW = [6.8, 2.8, 4.8, 1.4]  # class 1 for the first model; model-2 always answers 2
HOST = "sklearn-iris.kserve-test.example.com"


@dataclass
class Load:
    """Requests sent back to back from a few threads, every answer recorded in order."""

    url: str
    host: str
    path: str = "/v1/models/sklearn-iris:predict"
    threads: int = 2
    answers: list[tuple[float, int, object]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        self.path, json={"instances": [ROW]}, headers={"Host": self.host}
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                    continue
                self.answers.append(
                    (time.monotonic(), response.status_code, response.json()["predictions"][0])
                )

    def since(self, moment: float) -> Counter[object]:
        """Answers after ``moment``, less one per thread: those may have left before it."""
        later = [answer for when, _, answer in list(self.answers) if when >= moment]
        return Counter(later[self.threads :])

    def wait_answers(self, count: int, since: float, timeout: float = 30) -> Counter[object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.since(since)
            if sum(seen.values()) >= count:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"only {self.since(since)} answers in {timeout}s")


@pytest.fixture
def load_on(platform: RunningPlatform) -> Iterator[list[Load]]:
    loads: list[Load] = []
    yield loads
    for load in loads:
        load.stop()


def _canary_sample(percent: int | None) -> str:
    """KServe's canary tutorial: step 1 (model), step 2 (model-2 at 10%), 0 (rollback), none."""
    text = (SAMPLES / "sklearn-iris-canary.yaml").read_text()
    if percent is None:
        return text.replace("    canaryTrafficPercent: 10\n", "")
    return text.replace("canaryTrafficPercent: 10", f"canaryTrafficPercent: {percent}")


def test_canary_split_rollback_and_promotion_lose_no_request(
    platform: RunningPlatform, load_on: list[Load]
) -> None:
    step_one = _canary_sample(None).replace("1.0/model-2", "1.0/model")
    platform.apply(step_one)
    status = platform.wait_ready("sklearn-iris", "kserve-test")
    (stable,) = traffic(status)
    load = Load(platform.url, HOST).start()
    load_on.append(load)
    load.wait_answers(20, since=0)

    # Step two, KServe's sample unchanged: the new model takes 10% once it is ready.
    platform.apply((SAMPLES / "sklearn-iris-canary.yaml").read_text())
    status = platform.wait_for(
        "sklearn-iris",
        lambda s: (
            len(traffic(s)) == 2
            and is_ready(s)
            and s["components"]["predictor"]["latestReadyRevision"] != stable
        ),
        "kserve-test",
        what="canary at 10%",
    )
    canary = status["components"]["predictor"]["latestReadyRevision"]
    assert traffic(status) == {canary: 10, stable: 90}
    assert status["components"]["predictor"]["latestRolledoutRevision"] == stable
    split_at = time.monotonic()
    seen = load.wait_answers(200, since=split_at)
    share = seen[2] / sum(seen.values())
    assert 0.07 <= share <= 0.13, seen

    # Rollback: canaryTrafficPercent 0 sends everything to the rolled-out revision.
    platform.apply(_canary_sample(0))
    status = platform.wait_for(
        "sklearn-iris", lambda s: traffic(s).get(stable) == 100, "kserve-test", what="rollback"
    )
    rolled_back_at = time.monotonic()
    assert set(load.wait_answers(50, since=rolled_back_at)) == {1}

    # Promotion: without canaryTrafficPercent the latest revision takes everything.
    platform.apply(_canary_sample(None))
    status = platform.wait_for(
        "sklearn-iris", lambda s: traffic(s) == {canary: 100}, "kserve-test", what="promotion"
    )
    assert status["components"]["predictor"]["latestRolledoutRevision"] == canary
    assert status["components"]["predictor"]["previousRolledoutRevision"] == stable
    promoted_at = time.monotonic()
    assert set(load.wait_answers(50, since=promoted_at)) == {2}
    _wait_revisions(platform, "kserve-test", {canary})
    load.stop()
    assert load.failures == []
    assert len(load.answers) > 300


def test_tag_routing_reaches_each_revision_of_a_canary(platform: RunningPlatform) -> None:
    tagged = _canary_sample(None).replace(
        "  namespace: kserve-test\n",
        "  namespace: kserve-test\n  annotations:\n"
        '    serving.kserve.io/enable-tag-routing: "true"\n',
    )
    platform.apply(tagged.replace("1.0/model-2", "1.0/model"))
    platform.wait_ready("sklearn-iris", "kserve-test")
    platform.apply(tagged.replace("  predictor:\n", "  predictor:\n    canaryTrafficPercent: 10\n"))
    status = platform.wait_for(
        "sklearn-iris",
        lambda s: len(traffic(s)) == 2 and is_ready(s),
        "kserve-test",
        what="the tagged canary",
    )
    targets = status["components"]["predictor"]["traffic"]
    urls = {t["tag"]: t["url"] for t in targets}
    assert urls == {
        "latest": "http://latest-sklearn-iris-predictor.kserve-test.example.com",
        "prev": "http://prev-sklearn-iris-predictor.kserve-test.example.com",
    }
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        for tag, answer in (("latest", 2), ("prev", 1)):
            host = urls[tag].removeprefix("http://")
            for _ in range(5):
                response = client.post(
                    "/v1/models/sklearn-iris:predict",
                    json={"instances": [ROW]},
                    headers={"Host": host},
                )
                assert response.json() == {"predictions": [answer]}, (tag, response.text)


def test_rolling_update_loses_no_request(platform: RunningPlatform, load_on: list[Load]) -> None:
    sample = (SAMPLES / "sklearn-iris-v1.yaml").read_text()
    platform.apply(sample)
    (old,) = traffic(platform.wait_ready("sklearn-iris"))
    load = Load(platform.url, "sklearn-iris.default.example.com").start()
    load_on.append(load)
    load.wait_answers(20, since=0)
    platform.apply(sample.replace("1.0/model", "1.0/model-2"))
    status = platform.wait_for(
        "sklearn-iris",
        lambda s: old not in traffic(s) and is_ready(s),
        what="the new revision serving",
    )
    (new,) = traffic(status)
    assert status["components"]["predictor"]["latestRolledoutRevision"] == new
    moved_at = time.monotonic()
    assert set(load.wait_answers(50, since=moved_at)) == {2}
    _wait_revisions(platform, "default", {new}, name="sklearn-iris")
    load.stop()
    assert load.failures == []
    assert Counter(a for _, _, a in load.answers).keys() == {1, 2}


def test_a_crashed_replica_is_replaced(platform: RunningPlatform, load_on: list[Load]) -> None:
    platform.apply((SAMPLES / "sklearn-iris-v1.yaml").read_text())
    platform.wait_ready("sklearn-iris")
    load = Load(platform.url, "sklearn-iris.default.example.com", threads=1).start()
    load_on.append(load)
    load.wait_answers(20, since=0)
    ((replica,),) = [rev["replicas"] for rev in platform.revisions("sklearn-iris")]
    os.kill(replica["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    load.wait_answers(50, since=killed_at, timeout=60)
    (revision,) = platform.revisions("sklearn-iris")
    assert revision["restarts"] == 1
    assert revision["lastError"] is None  # cleared once the replacement is ready
    ((fresh,),) = [[r for r in revision["replicas"] if r["state"] == "Ready"]]
    assert fresh["pid"] != replica["pid"]
    load.stop()
    # One client thread: at most the one request the replica held when it died is lost.
    assert len(load.failures) <= 1, load.failures


def test_scale_to_zero_and_the_first_request_after_idle_is_answered(
    tmp_path: Path, sample_buckets: object
) -> None:
    platform = _scale_to_zero_iris(tmp_path, sample_buckets, stable_window_s=2.0, grace_s=1.0)
    try:
        platform.wait_ready("sklearn-iris")
        _wait_replicas(platform, "sklearn-iris", 0, timeout=30)
        # Scaled to zero, the service stays Ready: a request may wake it at any time.
        assert is_ready(platform.status("sklearn-iris"))
        with httpx.Client(base_url=platform.url, timeout=60) as client:
            response = client.post(
                "/v1/models/sklearn-iris:predict",
                json={"instances": [ROW]},
                headers={"Host": "sklearn-iris.default.example.com"},
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": [1]}
        (revision,) = platform.revisions("sklearn-iris")
        assert revision["coldStarts"] == 1
        # The metric says so too (a sample, not only the family's HELP line).
        assert re.search(
            r'^modelhost_gateway_cold_starts_total\{[^}]*service="sklearn-iris"[^}]*\} 1\.0$',
            platform.metrics(),
            re.MULTILINE,
        )
        # Idle again, it goes back to zero.
        _wait_replicas(platform, "sklearn-iris", 0, timeout=30)
    finally:
        stop_platform(platform)


def test_autoscaler_adds_replicas_under_load_and_removes_them_after(
    tmp_path: Path, sample_buckets: object
) -> None:
    env = {
        **sample_buckets.env(),  # type: ignore[attr-defined]
        "MODELHOST_CACHE_DIR": str(tmp_path / "cache"),
    }
    platform = start_platform(tmp_path / "home", replica_env=env, stable_window_s=2.0)
    load = None
    try:
        sample = (SAMPLES / "sklearn-iris-v1.yaml").read_text()
        platform.apply(
            sample.replace(
                "  predictor:\n",
                "  predictor:\n    scaleMetric: rps\n    scaleTarget: 5\n    maxReplicas: 2\n",
            )
        )
        platform.wait_ready("sklearn-iris")
        # Requests per second, not concurrency: these clients share the test process (and
        # its GIL) with the platform, so they send tens of requests a second but hold few
        # at once. A target of 5 rps (times Knative's 70% utilisation) asks for more than
        # two replicas, capped at two.
        load = Load(platform.url, "sklearn-iris.default.example.com", threads=3).start()
        _wait_ready_replicas(platform, "sklearn-iris", 2, timeout=40)
        load.stop()
        assert load.failures == []
        # Idle for the stable window: back to minReplicas (1).
        _wait_replicas(platform, "sklearn-iris", 1, timeout=40)
    finally:
        if load is not None:
            load.stop()
        stop_platform(platform)


def _wait_ready_replicas(platform: RunningPlatform, name: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = sum(
            1 for rev in platform.revisions(name) for r in rev["replicas"] if r["state"] == "Ready"
        )
        if ready == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{platform.revisions(name)}: not {count} ready replicas in {timeout}s")


def _wait_revisions(
    platform: RunningPlatform, namespace: str, names: set[str], name: str = "sklearn-iris"
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if {r["revision"] for r in platform.revisions(name, namespace)} == names:
            return
        time.sleep(0.1)
    raise AssertionError(f"revisions {platform.revisions(name, namespace)} != {names}")


def _wait_replicas(platform: RunningPlatform, name: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = sum(len(r["replicas"]) for r in platform.revisions(name))
        if live == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{platform.revisions(name)}: not {count} replicas in {timeout}s")


def test_a_revision_slower_to_start_than_its_idle_window_still_becomes_ready(
    tmp_path: Path, sample_buckets: object
) -> None:
    """Knative's rule: a new revision reaches its initial scale before it may scale down.

    The idle window here (0.3 s) is shorter than any replica's start, so a revision scaled
    to zero before its first replica was ready would never become Ready.
    """
    platform = _scale_to_zero_iris(tmp_path, sample_buckets, stable_window_s=0.2, grace_s=0.1)
    try:
        platform.wait_ready("sklearn-iris", timeout=30)
        _wait_replicas(platform, "sklearn-iris", 0, timeout=30)  # then it may go to zero
    finally:
        stop_platform(platform)


def test_min_replicas_0_applied_to_a_running_service_scales_it_to_zero(
    tmp_path: Path, sample_buckets: object
) -> None:
    """Scaling fields are not part of a revision: an update of them changes the one running."""
    env = {
        **sample_buckets.env(),  # type: ignore[attr-defined]
        "MODELHOST_CACHE_DIR": str(tmp_path / "cache"),
    }
    platform = start_platform(
        tmp_path / "home", replica_env=env, stable_window_s=0.5, scale_to_zero_grace_period_s=0.5
    )
    try:
        sample = (SAMPLES / "sklearn-iris-v1.yaml").read_text()
        platform.apply(sample.replace("  predictor:\n", "  predictor:\n    minReplicas: 1\n"))
        platform.wait_ready("sklearn-iris")
        _wait_ready_replicas(platform, "sklearn-iris", 1, timeout=30)
        (before,) = platform.revisions("sklearn-iris")
        (result,) = platform.apply(
            sample.replace("  predictor:\n", "  predictor:\n    minReplicas: 0\n")
        )
        assert result["result"] == "configured"
        _wait_replicas(platform, "sklearn-iris", 0, timeout=30)
        (after,) = platform.revisions("sklearn-iris")
        assert after["revision"] == before["revision"]
        assert after["desired"] == 0
        assert is_ready(platform.status("sklearn-iris"))
        # And back: minReplicas 1 again starts a replica without a request.
        platform.apply(sample.replace("  predictor:\n", "  predictor:\n    minReplicas: 1\n"))
        _wait_ready_replicas(platform, "sklearn-iris", 1, timeout=30)
    finally:
        stop_platform(platform)


def _scale_to_zero_iris(
    tmp_path: Path, sample_buckets: object, stable_window_s: float, grace_s: float
) -> RunningPlatform:
    """A platform with these idle windows, the iris sample applied with ``minReplicas: 0``."""
    env = {
        **sample_buckets.env(),  # type: ignore[attr-defined]
        "MODELHOST_CACHE_DIR": str(tmp_path / "cache"),
    }
    platform = start_platform(
        tmp_path / "home",
        replica_env=env,
        stable_window_s=stable_window_s,
        scale_to_zero_grace_period_s=grace_s,
    )
    sample = (SAMPLES / "sklearn-iris-v1.yaml").read_text()
    try:
        platform.apply(sample.replace("  predictor:\n", "  predictor:\n    minReplicas: 0\n"))
    except BaseException:
        stop_platform(platform)
        raise
    return platform
