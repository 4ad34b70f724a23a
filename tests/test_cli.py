"""``modelhost serve`` as a newcomer runs it: a real process, real ports, real clients."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from serving import ServeProcess, serve_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def iris_dir(tmp_path: Path) -> Path:
    target = tmp_path / "models" / "iris"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_iris_model.py"), str(target)], check=True
    )
    return target


@pytest.fixture
def iris(iris_dir: Path) -> Iterator[ServeProcess]:
    served = ServeProcess(serve_command(str(iris_dir), "--name", "iris"), cwd=iris_dir.parent)
    yield served
    assert served.stop() == 0


def test_readme_flow_serves_iris_over_v1_v2_and_grpc(iris: ServeProcess) -> None:
    row = [[6.8, 2.8, 4.8, 1.4]]
    v1 = httpx.post(f"{iris.url}/v1/models/iris:predict", json={"instances": row})
    assert v1.status_code == 200
    assert v1.json() == {"predictions": [1]}
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    v2 = httpx.post(f"{iris.url}/v2/models/iris/infer", json=body)
    assert v2.status_code == 200
    assert v2.json()["outputs"][0]["data"] == [1]
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{iris.grpc_port}")
    try:
        tensor = triton_grpc.InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array(row, dtype=np.float64))
        result = client.infer("iris", [tensor])
        assert result.as_numpy("output-0").tolist() == [1]
    finally:
        client.close()


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    (tmp_path / "slow_model.py").write_text(
        "import time\n"
        "from modelhost import Model\n"
        "class Slow(Model):\n"
        "    def load(self):\n"
        "        self.ready = True\n"
        "        return True\n"
        "    def predict(self, payload, headers=None):\n"
        "        time.sleep(1.5)\n"
        "        return {'predictions': ['done']}\n"
    )
    served = ServeProcess(
        serve_command(str(tmp_path), "--model-class", "slow_model:Slow", "--name", "slow"),
        cwd=tmp_path,
    )
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        result["response"] = httpx.post(
            f"{served.url}/v1/models/slow:predict", json={"instances": [1]}, timeout=30
        )

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the request is inside predict now
    began = time.perf_counter()
    assert served.stop() == 0
    caller.join(30)
    assert result["response"].status_code == 200
    assert result["response"].json() == {"predictions": ["done"]}
    assert time.perf_counter() - began >= 0.5, "exited before the request finished"
    assert any("Draining" in line for line in served.lines)


def test_serve_reports_a_bad_model_dir(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "modelhost", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "nope" in run.stderr


def test_plan_prints_what_the_platform_would_run(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from modelhost.cli import main

    sample = ROOT / "tests" / "control" / "samples" / "sklearn-iris-canary.yaml"
    assert main(["plan", "-f", str(sample), "-o", "json"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["name"] == "sklearn-iris"
    predictor = plan["components"][0]
    assert predictor["component"] == "predictor"
    assert predictor["revision"]["process"]["command"] == ["modelhost", "serve"]
    assert "--runtime=sklearn" in predictor["revision"]["process"]["args"]
    assert sum(split["percent"] for split in predictor["traffic"]) == 100


def test_plan_names_the_offending_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelhost.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata: {name: iris}\n"
        "spec:\n"
        "  predictor:\n"
        "    minReplica: 1\n"
        "    sklearn: {storageUri: 'gs://kfserving-examples/models/sklearn/1.0/model'}\n"
    )
    assert main(["plan", "-f", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "spec.predictor.minReplica" in err
    assert "minReplicas" in err
