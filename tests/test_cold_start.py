"""A cold ``modelhost serve`` imports what serving needs, and the other commands less still.

The start of a server is mostly imports; these guard the ones it has no use for: the trust
layer (aiohttp), the control plane (PyYAML), storage, the router, the transformer's clients,
CloudEvents, and gRPC when it is off. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from serving import ServeProcess, serve_command

ROOT = Path(__file__).resolve().parents[1]

# Nothing a plain model server uses: each comes with a flag, a model kind or another command.
NOT_FOR_SERVING = (
    "aiohttp",
    "cloudevents",
    "yaml",
    "modelhost.control",
    "modelhost.graph",
    "modelhost.registry",
    "modelhost.server.remote_predictor",
    "modelhost.storage",
    "modelhost.trust",
)
# What a command that serves no model (apply, get, ...) does without.
SERVER_STACK = ("numpy", "uvicorn", "grpc", "prometheus_client", "modelhost.server")


def loaded_after(code: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter has imported after running ``code``."""
    found = f"[m for m in {candidates!r} if m in sys.modules]"
    probe = f"{code}\nimport sys, json\nprint(json.dumps({found}))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_the_command_line_imports_no_server_until_a_command_runs() -> None:
    code = "from modelhost.cli import build_parser\nbuild_parser().parse_args(['get', 'isvc'])"
    assert loaded_after(code, (*NOT_FOR_SERVING, *SERVER_STACK)) == []


def test_the_package_imports_its_names_on_first_use() -> None:
    assert loaded_after("import modelhost", SERVER_STACK) == []
    code = "from modelhost import ModelServer, model_server\nassert model_server.parser"
    assert loaded_after(code, ("uvicorn", "modelhost.server.model_server")) == [
        "uvicorn",
        "modelhost.server.model_server",
    ]


def test_the_model_server_imports_grpc_only_to_serve_it() -> None:
    code = "import modelhost.server.model_server"
    assert loaded_after(code, (*NOT_FOR_SERVING, "grpc", "modelhost.server.grpc.server")) == []


MODULES_MODEL = '''
"""A custom model that answers which modules its server process has imported."""
import sys

from modelhost import Model


class LoadedModules(Model):
    def __init__(self, name: str, model_dir: str = "") -> None:
        super().__init__(name)

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        return {"predictions": sorted(m for m in payload["instances"] if m in sys.modules)}
'''


def test_a_served_model_finds_no_module_it_does_not_need(tmp_path: Path) -> None:
    (tmp_path / "loaded_modules.py").write_text(textwrap.dedent(MODULES_MODEL))
    path = os.environ.get("PYTHONPATH", "")
    command = serve_command(str(tmp_path), "--model-class", "loaded_modules:LoadedModules")
    served = ServeProcess(
        [*command, "--name", "modules", "--enable_grpc", "false"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(tmp_path), path)))},
    )
    try:
        asked = [*NOT_FOR_SERVING, "grpc", "uvicorn"]
        answer = httpx.post(f"{served.url}/v1/models/modules:predict", json={"instances": asked})
        assert answer.status_code == 200, answer.text
        # uvicorn serves it: the probe sees what is there.
        assert answer.json() == {"predictions": ["uvicorn"]}
    finally:
        assert served.stop() == 0


def _mapped(pid: int, folder: str) -> bool:
    """Whether the process has a shared object from a ``folder`` package mapped (imported)."""
    return f"/{folder}/" in Path(f"/proc/{pid}/maps").read_text()


def test_a_linear_model_starts_again_without_scikit_learn(tmp_path: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    (tmp_path / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), tmp_path / "iris" / "model.joblib")
    env = {**os.environ, "MODELHOST_FAST_START_DIR": str(tmp_path / "fast")}
    command = [*serve_command(str(tmp_path / "iris")), "--enable_grpc", "false"]
    infer = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": x[60].tolist()}]}
    answers = []
    for start in ("cold", "from the cache"):
        served = ServeProcess(command, cwd=tmp_path, env=env)
        try:
            assert _mapped(served.process.pid, "numpy")  # the probe sees what is there
            assert _mapped(served.process.pid, "sklearn") is (start == "cold")
            answer = httpx.post(f"{served.url}/v2/models/iris/infer", json=infer)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json()["outputs"])
            assert len(list((tmp_path / "fast").glob("*.npz"))) == 1
        finally:
            assert served.stop() == 0
    assert (
        answers[0]
        == answers[1]
        == [{"name": "output-0", "datatype": "INT64", "shape": [1], "data": [1]}]
    )
    served = ServeProcess(command, cwd=tmp_path, env=env)
    try:
        infer["inputs"][0]["data"] = [6.8, 2.8, None, 1.4]
        refused = httpx.post(f"{served.url}/v2/models/iris/infer", json=infer)
        # A null is NaN in FP64 data; scikit-learn's own validation refuses it.
        assert refused.status_code == 400, refused.text
        assert "NaN" in refused.json()["error"]
        assert _mapped(served.process.pid, "sklearn")
    finally:
        assert served.stop() == 0
