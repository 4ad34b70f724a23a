"""Detection of the runtime from a model folder, and build_model's choices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.runtimes import RUNTIMES, build_model, detect_runtime
from modelhost.runtimes.lightgbm import LightGBMModel
from modelhost.runtimes.names import RUNTIME_NAMES
from modelhost.runtimes.sklearn import SKLearnModel
from modelhost.runtimes.xgboost import XGBoostModel

REPO = Path(__file__).resolve().parents[2]


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        # Garbage content: detection must not open, let alone load, the model.
        (folder / name).write_bytes(b"not a model")
    return folder


def test_runtime_names() -> None:
    assert RUNTIMES == (
        "sklearn",
        "xgboost",
        "lightgbm",
        "onnx",
        "pytorch",
        "huggingface",
        "mlflow",
        "catboost",
        "custom",
        "llm",
        "vllm",
    )


@pytest.mark.parametrize(
    ("filename", "runtime"),
    [
        ("model.joblib", "sklearn"),
        ("model.pkl", "sklearn"),
        ("model.pickle", "sklearn"),
        ("model.json", "xgboost"),
        ("model.ubj", "xgboost"),
        ("model.bst", "xgboost"),
        ("model.txt", "lightgbm"),
        ("MODEL.JOBLIB", "sklearn"),
    ],
)
def test_detects_each_format(tmp_path: Path, filename: str, runtime: str) -> None:
    folder = touch(tmp_path / "m", filename)
    assert detect_runtime(folder) == runtime
    assert detect_runtime(str(folder / filename)) == runtime


@pytest.mark.parametrize("companion", ["config.json", "model-settings.json", "requirements.txt"])
def test_companion_files_are_not_models(tmp_path: Path, companion: str) -> None:
    folder = touch(tmp_path / "m", "model.joblib", companion, ".hidden.txt")
    assert detect_runtime(folder) == "sklearn"


def test_config_json_alone_is_no_model(tmp_path: Path) -> None:
    folder = touch(tmp_path / "m", "config.json")
    with pytest.raises(errors.ModelLoadError, match=r"No model file.*config\.json.*--runtime"):
        detect_runtime(folder)


def test_ambiguous_folder_names_files_and_asks_for_runtime(tmp_path: Path) -> None:
    folder = touch(tmp_path / "m", "model.joblib", "model.txt")
    with pytest.raises(errors.ModelLoadError) as info:
        detect_runtime(folder)
    message = str(info.value)
    assert "model.joblib" in message
    assert "model.txt" in message
    assert "--runtime" in message


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match=r"empty.*--runtime"):
        detect_runtime(tmp_path)


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(errors.ModelLoadError, match="nowhere"):
        detect_runtime(missing)
    with pytest.raises(errors.ModelLoadError, match="nowhere"):
        build_model(missing, "m")


@pytest.mark.parametrize(
    ("filename", "cls"),
    [("model.joblib", SKLearnModel), ("model.ubj", XGBoostModel), ("model.txt", LightGBMModel)],
)
def test_build_model_detects_and_does_not_load(tmp_path: Path, filename: str, cls: type) -> None:
    model = build_model(touch(tmp_path / "m", filename), "iris")
    assert isinstance(model, cls)
    assert model.name == "iris"
    assert not model.ready


def test_runtime_flag_settles_ambiguity(tmp_path: Path) -> None:
    folder = touch(tmp_path / "m", "model.joblib", "model.txt")
    assert isinstance(build_model(folder, "m", runtime="lightgbm"), LightGBMModel)
    assert isinstance(build_model(folder, "m", runtime="SKLearn"), SKLearnModel)


def test_unknown_runtime(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match=r"Unknown runtime 'tensorflow'.*sklearn"):
        build_model(touch(tmp_path / "m", "model.joblib"), "m", runtime="tensorflow")


def test_custom_runtime_needs_a_class(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match="--model-class"):
        build_model(tmp_path, "m", runtime="custom")


def test_options_reach_the_runtime(tmp_path: Path) -> None:
    folder = touch(tmp_path / "m", "model.joblib", "model.ubj")
    sk = build_model(folder, "m", runtime="sklearn", options={"predict_proba": "true"})
    assert isinstance(sk, SKLearnModel)
    assert sk.predict_proba
    xgb = build_model(folder, "m", runtime="xgboost", options={"nthread": 3, "other": 1})
    assert isinstance(xgb, XGBoostModel)
    assert xgb.nthread == 3


def test_importing_runtimes_imports_no_framework() -> None:
    code = (
        "import sys\n"
        "import modelhost.runtimes, modelhost.runtimes.detect, modelhost.runtimes.custom\n"
        "import modelhost.runtimes.sklearn, modelhost.runtimes.xgboost\n"
        "import modelhost.runtimes.lightgbm\n"
        "heavy = {'sklearn', 'joblib', 'xgboost', 'lightgbm'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_model_settings_file_sets_batching(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"")  # detection only; nothing is loaded
    (tmp_path / "model-settings.json").write_text(
        '{"name": "iris", "max_batch_size": 32, "max_batch_time": 0.005}'
    )
    model = build_model(tmp_path, "iris")
    assert model.batching is not None
    assert model.batching.max_batch_size == 32
    assert model.batching.max_latency_ms == pytest.approx(5.0)
    (tmp_path / "model-settings.json").write_text('{"max_batch_size": "many"}')
    with pytest.raises(errors.ModelLoadError, match="bad batching setting"):
        build_model(tmp_path, "iris")
    (tmp_path / "model-settings.json").write_text('{"name": "iris"}')
    assert build_model(tmp_path, "iris").batching is None


def test_aliases_name_the_same_runtime() -> None:
    from modelhost.runtimes.detect import get_runtime

    assert get_runtime("torch").name == "pytorch"
    assert get_runtime("onnxruntime").name == "onnx"
    assert get_runtime("HF").name == "huggingface"


def test_a_folder_format_wins_over_the_files_inside_it(tmp_path: Path) -> None:
    folder = touch(tmp_path / "m", "model.pkl")
    (folder / "MLmodel").write_text("flavors: {}\n")
    assert detect_runtime(folder) == "mlflow"


def test_the_names_the_command_line_lists_are_the_registered_runtimes() -> None:
    assert RUNTIME_NAMES == RUNTIMES
