"""Fixtures of the embedded platform's tests: a real platform, and KServe's sample buckets."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from platform_fixtures import RunningPlatform, start_platform, stop_platform
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from storage_servers import GcsServer, start_gcs

# Where KServe's samples keep their models (gs://kfserving-examples/..., gs://seldon-models/...).
SAMPLE_OBJECTS = {
    ("kfserving-examples", "models/sklearn/1.0/model/"): "logistic",
    ("kfserving-examples", "models/sklearn/1.0/model-2/"): "always-2",
    ("seldon-models", "sklearn/mms/lr_model/"): "logistic",
}


def _joblib(model: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sample_buckets() -> Iterator[GcsServer]:
    """A GCS emulator holding KServe's sample models: model-2 always answers class 2."""
    x, y = load_iris(return_X_y=True)
    models = {
        "logistic": _joblib(LogisticRegression(max_iter=1000).fit(x, y)),
        "always-2": _joblib(DummyClassifier(strategy="constant", constant=2).fit(x, y)),
    }
    server = start_gcs()
    for (bucket, prefix), kind in SAMPLE_OBJECTS.items():
        server.upload(bucket, {"model.joblib": models[kind]}, prefix=prefix)
    yield server
    server.stop()


@pytest.fixture
def platform(tmp_path: Path, sample_buckets: GcsServer) -> Iterator[RunningPlatform]:
    running = start_platform(
        tmp_path / "home",
        replica_env={**sample_buckets.env(), "MODELHOST_CACHE_DIR": str(tmp_path / "cache")},
    )
    yield running
    stop_platform(running)
