"""modelhost's ClusterServingRuntimes as a cluster that runs KServe gets them.

The shipped folder (``deploy/kubernetes/runtimes``) is what ``modelhost runtimes`` writes and
what the planner selects from; every runtime passes the ``openAPIV3Schema`` of KServe's CRD
(``../shared/reference/kserve-crds``) with unknown fields refused, as ``kubectl apply
--validate=strict`` would; applied over KServe's own runtimes, none ties with one of them in
KServe's webhook, and KServe's InferenceServices select them by model format. Then the
container KServe would run (``{{.Name}}`` rendered, only the model folder and the ports
changed) starts the real ``modelhost`` and answers v1, v2 and gRPC.

No Kubernetes runs here: KServe's shipped runtimes are test data below (their formats,
priorities and protocols, from KServe's ``config/runtimes``), and KServe's selection and
webhook rules are the planner's own (``modelhost.control``), tested against KServe's
behaviour in tests/control.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml
from serving import ServeProcess

from modelhost._version import __version__
from modelhost.cli import main
from modelhost.cli.runtime_commands import KUSTOMIZATION, REGENERATE, folder_files
from modelhost.control import (
    ClusterServingRuntime,
    ValidationError,
    apply_defaults,
    builtin_runtimes,
    parse_documents,
    parse_object,
    select_runtime,
    to_dict,
    validate_serving_runtime,
)
from modelhost.control.objects import AnyRuntime, InferenceService

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "deploy" / "kubernetes" / "runtimes"
# The shared reference data sits next to the repository, here and in CI.
CRD = REPO.parent / "shared" / "reference" / "kserve-crds"
CRD_FILE = CRD / "serving.kserve.io_clusterservingruntimes.yaml"
ROW = [6.8, 2.8, 4.8, 1.4]

# KServe's shipped ClusterServingRuntimes (config/runtimes): name → (formats as
# (name, version, autoSelect, priority), protocols, workerSpec?).
KSERVE_RUNTIMES: dict[str, tuple[list[tuple[str, str | None, bool, int | None]], list[str]]] = {
    "kserve-sklearnserver": ([("sklearn", "1", True, 1)], ["v1", "v2"]),
    "kserve-xgbserver": ([("xgboost", "2", True, 1)], ["v1", "v2"]),
    "kserve-lgbserver": ([("lightgbm", "4", True, 1)], ["v1", "v2"]),
    "kserve-predictiveserver": (
        [("sklearn", "1", False, 3), ("xgboost", "2", False, 3), ("lightgbm", "4", False, 3)],
        ["v1", "v2"],
    ),
    "kserve-mlserver": (
        [
            *[("sklearn", v, True, 2) for v in ("0", "1")],
            *[("xgboost", v, True, 2) for v in ("1", "2")],
            *[("lightgbm", v, True, 2) for v in ("3", "4")],
            *[("mlflow", v, True, 1) for v in ("1", "2")],
        ],
        ["v2"],
    ),
    "kserve-tensorflow-serving": (
        [("tensorflow", v, True, 2) for v in ("1", "2")],
        ["v1", "grpc-v1"],
    ),
    "kserve-torchserve": ([("pytorch", "1", True, 2)], ["v1", "v2", "grpc-v2"]),
    "kserve-tritonserver": (
        [
            ("tensorrt", "8", True, 1),
            ("tensorflow", "1", True, 1),
            ("tensorflow", "2", True, 1),
            ("onnx", "1", True, 1),
            ("pytorch", "1", False, None),
            ("triton", "2", True, 1),
        ],
        ["v2", "grpc-v2"],
    ),
    "kserve-pmmlserver": ([("pmml", v, True, 1) for v in ("3", "4")], ["v1", "v2"]),
    "kserve-paddleserver": ([("paddle", "2", True, 1)], ["v1", "v2"]),
    "kserve-huggingfaceserver": ([("huggingface", "1", True, 1)], ["v2", "v1"]),
    "kserve-autogluonserver": ([("autogluon", "1", True, 1)], ["v1", "v2"]),
    "kserve-vllmserver": ([("vLLM", "1", True, 1)], []),
    "kserve-openvino": (
        [
            ("openvino", "10", True, 1),
            ("onnx", "1", True, 2),
            ("tensorflow", "1", True, 3),
            ("huggingface", None, True, None),
        ],
        ["v1", "v2", "grpc-v2"],
    ),
}


# -- the shipped folder and the command ------------------------------------------------------


def shipped_runtimes() -> list[ClusterServingRuntime]:
    """The runtimes ``kubectl apply -k deploy/kubernetes/runtimes`` applies, in its order."""
    kustomization = yaml.safe_load((FOLDER / KUSTOMIZATION).read_text())
    found: list[ClusterServingRuntime] = []
    for name in kustomization["resources"]:
        for obj in parse_documents((FOLDER / name).read_text(), source=name):
            assert isinstance(obj, ClusterServingRuntime)
            found.append(obj)
    return found


def test_the_shipped_folder_is_what_the_command_writes() -> None:
    expected = folder_files()
    present = {path.name: path.read_text() for path in FOLDER.iterdir() if path.is_file()}
    stale = f"deploy/kubernetes/runtimes is out of date: run `{REGENERATE}`"
    assert sorted(present) == sorted(expected), stale + " (and remove files it does not write)"
    for name, text in expected.items():
        assert present[name] == text, f"{name}: {stale}"
    assert shipped_runtimes() == builtin_runtimes()


def test_the_command_prints_the_planners_runtimes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["runtimes"]) == 0
    printed = capsys.readouterr().out
    assert list(yaml.safe_load_all(printed)) == [to_dict(r) for r in builtin_runtimes()]
    assert parse_documents(printed) == builtin_runtimes()

    assert main(["runtimes", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
    assert listed["items"] == [to_dict(r) for r in builtin_runtimes()]

    private = ["--image-registry", "registry.example.com:5000/ml/", "--tag", "1.2.3"]
    assert main(["runtimes", *private]) == 0
    images = {
        doc["metadata"]["name"]: doc["spec"]["containers"][0]["image"]
        for doc in yaml.safe_load_all(capsys.readouterr().out)
    }
    assert images["kserve-sklearnserver"] == "registry.example.com:5000/ml/modelhost-tabular:1.2.3"
    assert images["modelhost-pytorchserver"] == "registry.example.com:5000/ml/modelhost-torch:1.2.3"
    assert images["kserve-huggingfaceserver"] == "registry.example.com:5000/ml/modelhost-llm:1.2.3"

    assert main(["runtimes", "--output-dir", str(tmp_path / "out")]) == 0
    written = {path.name: path.read_text() for path in (tmp_path / "out").iterdir()}
    assert written == folder_files()


def test_a_bad_tag_or_registry_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--tag", "a tag"], ["--image-registry", "https://registry.example.com"]):
        with pytest.raises(SystemExit) as exited:
            main(["runtimes", *flags])
        assert exited.value.code == 2
        assert f"argument {flags[0]}" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) is missing")
def test_kustomize_builds_the_folder_and_can_move_its_images(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    built = subprocess.run(
        [kubectl, "kustomize", str(FOLDER)], capture_output=True, text=True, check=True
    )
    by_name = {r.name: r for r in parse_documents(built.stdout)}
    assert by_name == {r.name: r for r in builtin_runtimes()}
    # A private registry by a kustomize overlay, the way KServe's own runtimes are retargeted.
    (tmp_path / KUSTOMIZATION).write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(FOLDER, tmp_path)],
                "images": [
                    {
                        "name": "modelhost/modelhost-tabular",
                        "newName": "mirror.example.com/modelhost-tabular",
                        "newTag": "pinned",
                    }
                ],
            }
        )
    )
    overlaid = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, check=True
    )
    images = {
        doc["metadata"]["name"]: doc["spec"]["containers"][0]["image"]
        for doc in yaml.safe_load_all(overlaid.stdout)
    }
    assert images["kserve-sklearnserver"] == "mirror.example.com/modelhost-tabular:pinned"
    assert images["modelhost-pytorchserver"].startswith("modelhost/modelhost-torch:")


# -- KServe's CRD schema ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.protocols.Validator:
    """The served version's openAPIV3Schema, unknown fields refused where it lists the fields."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    served = [v for v in crd["spec"]["versions"] if v["served"]]
    version = next((v for v in served if v.get("storage")), served[0])
    assert (crd["spec"]["group"], version["name"]) == ("serving.kserve.io", "v1alpha1")
    assert crd["spec"]["names"]["kind"] == "ClusterServingRuntime"
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # OpenAPI 3.0's schema object is JSON Schema draft 4's vocabulary (boolean exclusiveMinimum).
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The API server prunes unknown fields; strict field validation refuses them: so do we."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict(sub) for sub in out[key]]
    return out


def _schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_every_runtime_validates_against_kserves_crd(
    crd_validator: jsonschema.protocols.Validator,
) -> None:
    documents = [
        yaml.safe_load(text) for name, text in folder_files().items() if name != KUSTOMIZATION
    ]
    assert len(documents) == len(builtin_runtimes())
    for document in documents:
        assert (document["apiVersion"], document["kind"]) == (
            "serving.kserve.io/v1alpha1",
            "ClusterServingRuntime",
        )
        assert _schema_errors(crd_validator, document) == [], document["metadata"]["name"]


def test_the_schema_check_refuses_what_kserves_api_server_would(
    crd_validator: jsonschema.protocols.Validator,
) -> None:
    document = to_dict(builtin_runtimes()[0])
    zero = copy.deepcopy(document)
    zero["spec"]["supportedModelFormats"][0]["priority"] = 0
    assert any("priority" in e for e in _schema_errors(crd_validator, zero))
    typo = copy.deepcopy(document)
    typo["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    assert any("runAsNonroot" in e for e in _schema_errors(crd_validator, typo))
    port = copy.deepcopy(document)
    port["spec"]["containers"][0]["ports"] = [{"name": "http1"}]
    assert any("containerPort" in e for e in _schema_errors(crd_validator, port))


def test_each_runtime_keeps_kserves_contract_and_the_restricted_profile() -> None:
    images = {"sklearn": "tabular", "xgboost": "tabular", "onnx": "tabular"}
    images |= {"pytorch": "torch", "huggingface": "llm"}
    for runtime in builtin_runtimes():
        (container,) = runtime.spec.containers or []
        assert container.name == "kserve-container"
        assert container.command == ["modelhost", "serve"]
        args = container.args or []
        assert args[:2] == ["--model_name={{.Name}}", "--model_dir=/mnt/models"]
        assert {"--http_port=8080", "--grpc_port=8081"} <= set(args)
        assert container.ports is None  # Knative allows one port; KServe's runtimes name none
        assert container.security_context == {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container.resources is not None
        assert container.resources.requests == container.resources.limits
        assert runtime.spec.annotations == {
            "prometheus.kserve.io/port": "8080",
            "prometheus.kserve.io/path": "/metrics",
        }
        assert set(runtime.spec.protocol_versions or ()) >= {"v2", "grpc-v2"}
        formats = runtime.spec.supported_model_formats or []
        assert formats
        assert all(f.auto_select and f.priority for f in formats)
        # A runtime that serves CatBoost or MLflow models runs the image that has them.
        needs_full = any(f.name in ("catboost", "mlflow") for f in formats)
        flavour = "full" if needs_full else images.get(formats[0].name or "", "tabular")
        assert container.image == f"modelhost/modelhost-{flavour}:{__version__}", runtime.name


# -- on a cluster that runs KServe -----------------------------------------------------------


def kserve_runtime(name: str) -> ClusterServingRuntime:
    formats, protocols = KSERVE_RUNTIMES[name]
    entries = [
        {
            "name": f,
            **({"version": v} if v else {}),
            "autoSelect": auto,
            **({"priority": p} if p else {}),
        }
        for f, v, auto, p in formats
    ]
    spec: dict[str, Any] = {
        "supportedModelFormats": entries,
        "containers": [{"name": "kserve-container", "image": f"kserve/{name}:v0.16.0"}],
    }
    if protocols:
        spec["protocolVersions"] = protocols
    obj = parse_object(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "ClusterServingRuntime",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
    assert isinstance(obj, ClusterServingRuntime)
    return obj


def kserve_cluster() -> list[AnyRuntime]:
    """KServe's runtimes, then ``kubectl apply -k`` of the shipped folder over them."""
    ours = shipped_runtimes()
    names = {r.name for r in ours}
    return [*(kserve_runtime(n) for n in KSERVE_RUNTIMES if n not in names), *ours]


def test_kserves_webhook_takes_every_runtime_over_kserves_own() -> None:
    cluster = kserve_cluster()
    for runtime in shipped_runtimes():
        validate_serving_runtime(runtime, cluster)
    # The check bites: at Triton's priority, the ONNX runtime would tie with it over v2.
    onnx = next(r for r in shipped_runtimes() if r.name == "modelhost-onnxserver")
    (entry,) = onnx.spec.supported_model_formats or []
    entry.priority = 1
    with pytest.raises(ValidationError, match="kserve-tritonserver already serves onnx"):
        validate_serving_runtime(onnx, cluster)


def inference_service(predictor: str) -> InferenceService:
    text = (
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n  name: demo\n  namespace: kserve-test\n"
        f"spec:\n  predictor:\n{predictor}"
    )
    (obj,) = parse_documents(text)
    assert isinstance(obj, InferenceService)
    return obj


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        ("    sklearn:\n      storageUri: gs://b/iris\n", "kserve-sklearnserver"),
        (
            "    model:\n      modelFormat: {name: sklearn}\n      protocolVersion: v2\n"
            "      storageUri: gs://b/iris\n",
            "kserve-mlserver",
        ),
        ("    xgboost:\n      storageUri: gs://b/m\n", "kserve-xgbserver"),
        (
            "    model:\n      modelFormat: {name: lightgbm}\n      storageUri: gs://b/m\n",
            "kserve-lgbserver",
        ),
        # The shorthand asks for v2, where Triton and OpenVINO serve ONNX too.
        ("    onnx:\n      storageUri: gs://b/m\n", "modelhost-onnxserver"),
        (
            "    model:\n      modelFormat: {name: onnx}\n      storageUri: gs://b/m\n",
            "modelhost-onnxserver",
        ),
    ],
)
def test_kserve_inference_services_select_modelhost_by_format(
    predictor: str, expected: str
) -> None:
    selected = select_runtime(apply_defaults(inference_service(predictor)), kserve_cluster())
    assert selected is not None
    assert selected.name == expected
    (container,) = selected.spec.containers or []
    # kserve-mlserver serves MLflow models too: it runs the image that has MLflow.
    image = "modelhost-full" if expected == "kserve-mlserver" else "modelhost-tabular"
    assert (container.image or "").startswith(f"modelhost/{image}:")


def test_kserves_torchserve_keeps_pytorch_models() -> None:
    # Its model archives are not modelhost's PyTorch layout: its priority 2 stays ahead.
    source = inference_service("    pytorch:\n      storageUri: gs://b/m\n")
    selected = select_runtime(apply_defaults(source), kserve_cluster())
    assert selected is not None
    assert selected.name == "kserve-torchserve"


# -- the container KServe would run ----------------------------------------------------------


def kserve_argv(runtime: ClusterServingRuntime, isvc: InferenceService) -> list[str]:
    """The ``kserve-container``'s command and args as KServe runs them.

    KServe renders the container's JSON as a Go template over the InferenceService's
    metadata (``ReplacePlaceholders``); these runtimes use ``{{.Name}}`` and
    ``{{.Annotations.modelFormat}}`` (which KServe's webhook writes) only.
    """
    annotations = isvc.metadata.annotations or {}

    def value(match: re.Match[str]) -> str:
        field, key = match.group(1), match.group(2)
        return (isvc.metadata.name or "") if field == "Name" else annotations[key]

    text = json.dumps(to_dict(runtime)["spec"]["containers"][0])
    text = re.sub(r"\{\{\.(Name|Annotations\.(\w+))\}\}", value, text)
    assert "{{" not in text, runtime.name
    rendered = json.loads(text)
    return [*rendered["command"], *rendered["args"]]


def local_argv(argv: list[str], model_dir: Path) -> list[str]:
    """The same argv here: this venv's ``modelhost`` and ``model_dir`` for ``/mnt/models``.

    The ports become 0 for the kernel to pick: ``ServeProcess`` reads the ports from the
    ready line, so nothing else can take a port between choosing and binding it.
    """
    console = Path(sys.executable).with_name("modelhost")
    head = [str(console)] if console.exists() else [sys.executable, "-m", "modelhost"]
    changes = {
        "--model_dir=/mnt/models": f"--model_dir={model_dir}",
        "--http_port=8080": "--http_port=0",
        "--grpc_port=8081": "--grpc_port=0",
    }
    assert argv[0] == "modelhost"
    assert set(changes) <= set(argv)
    return [*head, *(changes.get(arg, arg) for arg in argv[1:])]


def _iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


def save_sklearn(folder: Path) -> Any:
    import joblib
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000).fit(*_iris())
    joblib.dump(model, folder / "model.joblib")
    return model.predict(np.array([ROW]))


def save_xgboost(folder: Path) -> Any:
    import xgboost as xgb

    x, y = _iris()
    params = {"objective": "multi:softprob", "num_class": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=5)
    booster.save_model(str(folder / "model.json"))
    return booster.predict(xgb.DMatrix(np.array([ROW])))


def save_lightgbm(folder: Path) -> Any:
    import lightgbm as lgb

    x, y = _iris()
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=5)
    booster.save_model(str(folder / "model.txt"))
    return booster.predict(np.array([ROW]))


SAVERS = {"sklearn": save_sklearn, "xgboost": save_xgboost, "lightgbm": save_lightgbm}


@pytest.mark.parametrize(
    ("model_format", "protocol", "runtime_name"),
    [
        ("sklearn", "v1", "kserve-sklearnserver"),
        ("xgboost", "v1", "kserve-xgbserver"),
        ("lightgbm", "v1", "kserve-lgbserver"),
        ("sklearn", "v2", "kserve-mlserver"),
    ],
)
def test_the_container_kserve_runs_serves_v1_v2_and_grpc(
    model_format: str, protocol: str, runtime_name: str, tmp_path: Path
) -> None:
    model_dir = tmp_path / "mnt-models"
    model_dir.mkdir()
    expected = np.asarray(SAVERS[model_format](model_dir))
    isvc = apply_defaults(
        inference_service(
            f"    model:\n      modelFormat: {{name: {model_format}}}\n"
            f"      protocolVersion: {protocol}\n      storageUri: gs://b/m\n"
        )
    )
    selected = select_runtime(isvc, kserve_cluster())
    assert selected is not None
    assert selected.name == runtime_name
    assert isinstance(selected.runtime, ClusterServingRuntime)
    argv = kserve_argv(selected.runtime, isvc)
    # kserve-mlserver's --runtime is the model format, from the annotation KServe writes.
    assert f"--runtime={model_format}" in argv
    assert "--model_name=demo" in argv
    served = ServeProcess(local_argv(argv, model_dir), cwd=tmp_path)
    try:
        v1 = httpx.post(f"{served.url}/v1/models/demo:predict", json={"instances": [ROW]})
        assert v1.status_code == 200, v1.text
        assert np.allclose(np.asarray(v1.json()["predictions"]), expected)
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [ROW]}]}
        v2 = httpx.post(f"{served.url}/v2/models/demo/infer", json=body)
        assert v2.status_code == 200, v2.text
        (output,) = v2.json()["outputs"]
        assert np.allclose(np.asarray(output["data"]).reshape(output["shape"]), expected)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
        try:
            tensor = triton_grpc.InferInput("input-0", [1, 4], "FP64")
            tensor.set_data_from_numpy(np.array([ROW], dtype=np.float64))
            result = client.infer("demo", [tensor])
            assert np.allclose(result.as_numpy(output["name"]), expected)
        finally:
            client.close()
    finally:
        assert served.stop() == 0
