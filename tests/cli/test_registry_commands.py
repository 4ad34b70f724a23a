"""``modelhost registry ...`` against a real registry (the REST app under uvicorn, loopback)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelhost.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from registry_support import serve_registry


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with serve_registry(str(tmp_path / "registry.sqlite")) as port:
        yield f"http://127.0.0.1:{port}"


def _run(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> str:
    code = main(["registry", *args, "--url", url])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_register_list_and_show_a_model_card(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Iris\nA logistic regression on Fisher's iris.\n")
    out = _run(
        capsys,
        url,
        "register",
        "iris",
        "v1",
        "s3://models/iris/v1",
        "sklearn",
        "--format-version",
        "1",
        "--license",
        "BSD-3-Clause",
        "--readme",
        str(readme),
        "--tasks",
        "tabular-classification, iris",
        "--maturity",
        "Stable",
        "--metric",
        "accuracy=0.97",
        "--metric",
        "dataset=iris-150",
    )
    assert out.startswith("registered iris/v1 ")
    _run(capsys, url, "register", "iris", "v2", "s3://models/iris/v2", "sklearn")

    models = json.loads(_run(capsys, url, "list", "-o", "json"))
    assert [m["name"] for m in models] == ["iris"]
    assert models[0]["tasks"] == ["tabular-classification", "iris"]
    versions = _run(capsys, url, "list", "iris")
    assert [line.split()[1] for line in versions.splitlines()[1:]] == ["v1", "v2"]

    card = _run(capsys, url, "show", "iris", "v1")
    assert "License:     BSD-3-Clause" in card
    assert "Maturity:    Stable" in card
    assert "Tasks:       tabular-classification, iris" in card
    assert "URI:         s3://models/iris/v1" in card
    assert "Metric:      accuracy = 0.97" in card
    assert "Metric:      dataset = iris-150" in card
    assert "A logistic regression on Fisher's iris." in card
    assert "Versions:    v1, v2" in _run(capsys, url, "show", "iris")


def test_deploy_writes_a_labelled_model_registry_service(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(capsys, url, "register", "Iris_Model", "v1", "gs://models/iris", "sklearn")
    printed = _run(capsys, url, "deploy", "Iris_Model", "v1", "-n", "team-a", "--dry-run")
    isvc = yaml.safe_load(printed)
    assert isvc["metadata"] == {
        "name": "iris-model",
        "namespace": "team-a",
        "labels": {
            "modelregistry.kubeflow.org/registered-model-id": "1",
            "modelregistry.kubeflow.org/model-version-id": "2",
        },
    }
    assert isvc["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "model-registry://Iris_Model/v1",
    }


def test_errors_are_one_line_and_exit_1(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "show", "wine", "--url", url]) == 1
    assert "no registered model 'wine'" in capsys.readouterr().err
    _run(capsys, url, "register", "iris", "v1", "s3://m/1", "sklearn")
    assert main(["registry", "register", "iris", "v1", "s3://m/1", "sklearn", "--url", url]) == 1
    assert "409" in capsys.readouterr().err
    bad_metric = ["registry", "register", "iris", "v3", "s3://m", "x", "--metric", "a"]
    assert main([*bad_metric, "--url", url]) == 1
    assert "--metric takes KEY=VALUE" in capsys.readouterr().err
