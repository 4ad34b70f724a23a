"""``modelhost up -d`` and ``down`` as a user runs them: real processes, a real home folder."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import joblib
import pytest
from platform_fixtures import run_modelhost
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def _modelhost(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_modelhost(*args, home=home, cwd=cwd, MODELHOST_CACHE_DIR=str(cwd / "cache"))


def test_up_detached_apply_serve_and_down(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    (tmp_path / "models" / "iris").mkdir(parents=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), tmp_path / "models/iris/model.joblib")
    sample = Path(__file__).resolve().parents[2] / "examples" / "sklearn-iris.yaml"
    home = tmp_path / "home"
    up = _modelhost("up", "-d", "--port", "0", "--grpc-port", "0", home=home, cwd=tmp_path)
    assert up.returncode == 0, up.stderr + up.stdout
    address = json.loads((home / "platform.json").read_text())
    try:
        again = _modelhost("up", "-d", "--port", "0", home=home, cwd=tmp_path)
        assert again.returncode == 1
        assert "already runs" in again.stdout
        applied = _modelhost("apply", "-f", str(sample), "--wait", home=home, cwd=tmp_path)
        assert applied.returncode == 0, applied.stderr
        assert "inferenceservice/iris ready at http://iris.default.example.com" in applied.stdout
        response = httpx.post(
            f"{address['url']}/v1/models/iris:predict",
            json={"instances": [[6.8, 2.8, 4.8, 1.4]]},
            timeout=30,
        )
        assert response.json() == {"predictions": [1]}
        described = _modelhost("describe", "isvc", "iris", home=home, cwd=tmp_path)
        pids = [
            int(line.split("pid ")[1].split()[0])
            for line in described.stdout.splitlines()
            if " pid " in line
        ]
        assert len(pids) == 1
    finally:
        down = _modelhost("down", home=home, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert f"pid {address['pid']}" in down.stdout
    assert not (home / "platform.json").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):  # the replica went down with the platform
        os.kill(pids[0], 0)
    assert _modelhost("down", home=home, cwd=tmp_path).stdout.startswith("modelhost down: no")
