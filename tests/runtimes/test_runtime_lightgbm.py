"""The LightGBM runtime: loading a text model, both payload kinds, metadata, input errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost import errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse
from modelhost.runtimes import build_model
from modelhost.runtimes.lightgbm import LightGBMModel

SAMPLE = [6.8, 2.8, 4.8, 1.4]


@pytest.fixture
def model(tmp_path: Path, lgb_booster: Any, save_lightgbm: Any) -> LightGBMModel:
    save_lightgbm(lgb_booster, tmp_path)
    (tmp_path / "requirements.txt").write_text("lightgbm\n")
    model = build_model(tmp_path, "iris", options={"nthread": 2})
    assert isinstance(model, LightGBMModel)
    assert model.load()
    return model


def test_v1_prediction_is_the_framework_prediction(
    model: LightGBMModel, lgb_booster: Any, sample: Any
) -> None:
    assert model.platform == "lightgbm"
    result = model.predict({"instances": [SAMPLE]})
    expected = lgb_booster.predict(sample)
    np.testing.assert_allclose(result["predictions"], expected)
    assert int(np.argmax(result["predictions"][0])) == int(np.argmax(expected[0])) == 1


def test_v2_prediction_is_the_framework_prediction(
    model: LightGBMModel, lgb_booster: Any, sample: Any
) -> None:
    request = InferRequest("iris", [InferInput("input-0", [1, 4], "FP32", data=list(SAMPLE))])
    response = model.predict(request)
    assert isinstance(response, InferResponse)
    output = response.outputs[0]
    assert output.shape == [1, 3]
    expected = lgb_booster.predict(sample.astype(np.float32))
    np.testing.assert_allclose(output.as_numpy(), expected)
    assert int(np.argmax(output.as_numpy()[0])) == int(np.argmax(expected[0]))


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[1.0, 2.0, 3.0]], r"number of features in data \(3\)"),
        ([6.8, 2.8, 4.8, 1.4], "2 dimensional"),
        ([["a", "b", "c", "d"]], "could not convert"),
    ],
)
def test_bad_input_is_a_400(model: LightGBMModel, instances: Any, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message) as info:
        model.predict({"instances": instances})
    assert errors.http_status(info.value) == 400


def test_metadata(model: LightGBMModel) -> None:
    assert model.get_input_types() == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert model.get_output_types() == [{"name": "output-0", "datatype": "FP64", "shape": [-1, 3]}]


def test_a_binary_model_has_one_output_column(
    tmp_path: Path, iris: Any, save_lightgbm: Any
) -> None:
    import lightgbm as lgb

    x, y = iris
    params = {"objective": "binary", "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, label=(y == 1)), num_boost_round=3)
    save_lightgbm(booster, tmp_path, "binary.txt")
    model = LightGBMModel("bin", tmp_path)
    model.load()
    assert model.get_output_types()[0]["shape"] == [-1]
    assert len(model.predict({"instances": [SAMPLE, SAMPLE]})["predictions"]) == 2


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(errors.ModelLoadError, match=r"Cannot load .*model\.txt"):
        LightGBMModel("iris", tmp_path).load()


def test_not_ready_before_load(tmp_path: Path) -> None:
    model = LightGBMModel("iris", tmp_path)
    assert model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": [SAMPLE]})
