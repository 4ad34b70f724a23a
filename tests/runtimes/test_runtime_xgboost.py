"""The XGBoost runtime: each file format, both payload kinds, metadata, and input errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost import errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse
from modelhost.runtimes import build_model
from modelhost.runtimes.xgboost import XGBoostModel

SAMPLE = [6.8, 2.8, 4.8, 1.4]


def framework_predict(booster: Any, sample: Any) -> Any:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(sample.astype(np.float32)))


@pytest.fixture
def model(tmp_path: Path, xgb_booster: Any, save_xgboost: Any) -> XGBoostModel:
    save_xgboost(xgb_booster, tmp_path, "model.json")
    model = XGBoostModel("iris", tmp_path)
    assert model.load()
    return model


@pytest.mark.parametrize("filename", ["model.json", "model.ubj", "model.bst"])
def test_each_format_predicts_as_the_framework(
    tmp_path: Path, xgb_booster: Any, save_xgboost: Any, sample: Any, filename: str
) -> None:
    save_xgboost(xgb_booster, tmp_path, filename)
    (tmp_path / "config.json").write_text("{}")
    model = build_model(tmp_path, "iris")
    assert isinstance(model, XGBoostModel)
    assert model.load()
    assert model.platform == "xgboost"
    expected = framework_predict(xgb_booster, sample)
    result = model.predict({"instances": [SAMPLE]})
    np.testing.assert_allclose(result["predictions"], expected, rtol=1e-6)
    assert int(np.argmax(result["predictions"][0])) == int(np.argmax(expected[0])) == 1


def test_v2_prediction_is_the_framework_prediction(
    model: XGBoostModel, xgb_booster: Any, sample: Any
) -> None:
    request = InferRequest("iris", [InferInput("input-0", [1, 4], "FP32", data=list(SAMPLE))])
    response = model.predict(request)
    assert isinstance(response, InferResponse)
    output = response.outputs[0]
    assert output.shape == [1, 3]
    assert output.datatype == "FP32"
    expected = framework_predict(xgb_booster, sample)
    np.testing.assert_allclose(output.as_numpy(), expected, rtol=1e-6)
    assert int(np.argmax(output.as_numpy()[0])) == int(np.argmax(expected[0]))


def test_list_input_goes_through_a_dmatrix(model: XGBoostModel, xgb_booster: Any) -> None:
    # Not an array: the payload helper passes a list of strings through as is.
    with pytest.raises(errors.InvalidInput):
        model.predict({"instances": ["6.8, 2.8, 4.8, 1.4"]})


@pytest.mark.parametrize(
    ("instances", "message"),
    [([[1.0, 2.0, 3.0]], "expected: 4, got 3"), ([6.8, 2.8, 4.8, 1.4], "Number of columns")],
)
def test_wrong_feature_count_is_a_400(model: XGBoostModel, instances: Any, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message) as info:
        model.predict({"instances": instances})
    assert "Stack trace" not in str(info.value)
    assert not str(info.value).startswith("[")


def test_metadata(model: XGBoostModel) -> None:
    assert model.get_input_types() == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert model.get_output_types() == [{"name": "output-0", "datatype": "FP32", "shape": [-1, 3]}]


def test_nthread_option(tmp_path: Path, xgb_booster: Any, save_xgboost: Any) -> None:
    save_xgboost(xgb_booster, tmp_path, "model.ubj")
    model = build_model(tmp_path, "iris", options={"nthread": 2})
    assert isinstance(model, XGBoostModel)
    assert model.nthread == 2
    assert model.load()
    assert model.predict({"instances": [SAMPLE, SAMPLE]})["predictions"][1]


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(errors.ModelLoadError, match=r"Cannot load .*model\.json"):
        XGBoostModel("iris", tmp_path).load()


def test_not_ready_before_load(tmp_path: Path) -> None:
    model = XGBoostModel("iris", tmp_path)
    assert model.get_input_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": [SAMPLE]})
