"""``modelhost apply --wait``: it returns once what was applied serves, not what served before."""

from __future__ import annotations

from pathlib import Path

import pytest
from platform_fixtures import RunningPlatform, traffic

from modelhost.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "control" / "samples"


def _with_env(sample: str, value: str) -> str:
    """The sample with an environment variable on its model: a new revision per value."""
    return sample.replace(
        "      storageUri:",
        f'      env:\n        - name: IRIS_EDITION\n          value: "{value}"\n      storageUri:',
    )


def test_apply_wait_returns_once_the_updated_revision_serves(
    platform: RunningPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", platform.server.api_address]
    sample = (SAMPLES / "sklearn-iris-v1.yaml").read_text()
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(_with_env(sample, "1"))
    second.write_text(_with_env(sample, "2"))
    assert main(["apply", "-f", str(first), "--wait", *server]) == 0
    before = platform.status("sklearn-iris")["components"]["predictor"]
    assert main(["apply", "-f", str(second), "--wait", *server]) == 0
    out = capsys.readouterr().out
    assert "sklearn-iris configured" in out
    assert "inferenceservice/sklearn-iris ready at http://sklearn-iris.default.example.com" in out
    # On return, not later: the update's revision is the ready one and takes the traffic.
    status = platform.status("sklearn-iris")
    predictor = status["components"]["predictor"]
    assert predictor["latestCreatedRevision"] != before["latestCreatedRevision"]
    assert predictor["latestReadyRevision"] == predictor["latestCreatedRevision"]
    assert traffic(status) == {predictor["latestCreatedRevision"]: 100}


def test_apply_wait_says_why_the_update_is_not_ready(
    platform: RunningPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", platform.server.api_address]
    sample = (SAMPLES / "sklearn-iris-v1.yaml").read_text()
    good, broken = tmp_path / "good.yaml", tmp_path / "broken.yaml"
    good.write_text(sample)
    broken.write_text(sample.replace("1.0/model", "1.0/no-such-model"))
    assert main(["apply", "-f", str(good), "--wait", *server]) == 0
    assert main(["apply", "-f", str(broken), *server]) == 0

    def failed(status: dict[str, object]) -> bool:
        conditions = {c["type"]: c for c in status.get("conditions") or ()}  # type: ignore[attr-defined]
        return conditions.get("LatestDeploymentReady", {}).get("reason") == "RevisionFailed"

    platform.wait_for("sklearn-iris", failed, what="the new revision's failure")
    capsys.readouterr()
    # The old revision still serves (Ready), but the update is not what serves.
    assert main(["apply", "-f", str(broken), "--wait", "--timeout", "1", *server]) == 1
    err = capsys.readouterr().err
    assert "sklearn-iris not Ready in 1s: replica sklearn-iris-predictor-" in err
    assert "before it was ready" in err
