"""The KServe-style custom model example runs under modelhost, as a script and as a class."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
from serving import ServeProcess, serve_command

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_model" / "model.py"

# Names KServe's own package exports for custom models (kserve/__init__.py).
KSERVE_NAMES = {
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "Model",
    "ModelRepository",
    "ModelServer",
    "PredictorConfig",
}


def test_example_imports_only_names_kserve_also_exports() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "modelhost"]
    assert len(imports) == 1, "porting must take exactly one import line"
    names = {alias.name for alias in imports[0].names}
    assert names <= KSERVE_NAMES, names - KSERVE_NAMES


def check_weighted_sum(http_port: int, grpc_port: int, name: str) -> None:
    rows = [[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 1.0]]
    url = f"http://127.0.0.1:{http_port}"
    v1 = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": rows})
    assert v1.json() == {"predictions": [5.0, 3.0]}
    body = {"id": "e", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
    v2 = httpx.post(f"{url}/v2/models/{name}/infer", json=body).json()
    assert v2["id"] == "e"
    assert v2["outputs"] == [
        {"name": "score", "datatype": "FP64", "shape": [2], "data": [5.0, 3.0]}
    ]
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        tensor = triton_grpc.InferInput("x", [2, 4], "FP64")
        tensor.set_data_from_numpy(np.array(rows))
        assert client.infer(name, [tensor]).as_numpy("score").tolist() == [5.0, 3.0]
    finally:
        client.close()


def test_example_runs_as_a_script_with_kserve_flags() -> None:
    served = ServeProcess([sys.executable, str(EXAMPLE)], cwd=EXAMPLE.parent)
    try:
        check_weighted_sum(served.http_port, served.grpc_port, "weighted-sum")
    finally:
        assert served.stop() == 0


def test_example_serves_through_model_class() -> None:
    served = ServeProcess(
        serve_command(str(EXAMPLE.parent), "--model-class", "model:WeightedSum", "--name", "ws"),
        cwd=ROOT,
    )
    try:
        check_weighted_sum(served.http_port, served.grpc_port, "ws")
    finally:
        assert served.stop() == 0


def test_the_credit_example_trains_and_plans_with_its_logger_and_explainer(
    tmp_path: Path, capsys: Any
) -> None:
    """The README's trust walk-through: the model it trains and the service it applies."""
    import joblib

    from modelhost.cli import main

    folder = ROOT / "examples" / "credit"
    sys.path.insert(0, str(folder))
    try:
        import make_credit_model
    finally:
        sys.path.remove(str(folder))
    make_credit_model.main(str(tmp_path / "models" / "credit"))
    model = joblib.load(tmp_path / "models" / "credit" / "model.joblib")
    rows = make_credit_model.applicants(400, seed=3)
    approved = model.predict(rows)
    # Biased on purpose: gender 1 is approved more often (the README's SPD finds it).
    assert approved[rows[:, 1] == 1].mean() - approved[rows[:, 1] == 0].mean() > 0.3
    assert main(["plan", "-f", str(folder / "credit.yaml"), "-o", "json"]) == 0
    plan = capsys.readouterr().out
    assert "--explainer=shap" in plan
    assert "modelhost://trust" in plan
