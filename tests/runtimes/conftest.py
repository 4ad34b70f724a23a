"""Small iris models, trained once per session and saved by each test into its own tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SAMPLE = [6.8, 2.8, 4.8, 1.4]


@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def sklearn_estimator(iris: tuple[Any, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(*iris)


@pytest.fixture(scope="session")
def xgb_booster(iris: tuple[Any, Any]) -> Any:
    import xgboost as xgb

    x, y = iris
    params = {"objective": "multi:softprob", "num_class": 3, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=5)


@pytest.fixture(scope="session")
def lgb_booster(iris: tuple[Any, Any]) -> Any:
    import lightgbm as lgb

    x, y = iris
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=5)


@pytest.fixture
def sample() -> Any:
    return np.array([SAMPLE])


# The savers are fixtures, not importable helpers: "conftest" is a module name tests/ uses too.
Saver = Callable[..., Path]


@pytest.fixture
def save_sklearn() -> Saver:
    return _save_sklearn


@pytest.fixture
def save_xgboost() -> Saver:
    return _save_xgboost


@pytest.fixture
def save_lightgbm() -> Saver:
    return _save_lightgbm


def _save_sklearn(estimator: Any, folder: Path, filename: str = "model.joblib") -> Path:
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    joblib.dump(estimator, path)
    return path


def _save_xgboost(booster: Any, folder: Path, filename: str = "model.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if path.suffix in (".json", ".ubj"):
        booster.save_model(str(path))
    else:
        # What a .bst holds today: XGBoost 3 saves no other binary format.
        path.write_bytes(bytes(booster.save_raw("ubj")))
    return path


def _save_lightgbm(booster: Any, folder: Path, filename: str = "model.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    booster.save_model(str(path))
    return path
