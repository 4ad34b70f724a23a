"""KServe's storage spec resolved: the storage Secret's entry → a URI and credentials.

The first tests call the pure resolver; the rest run ``modelhost fetch`` (once as a real
subprocess, else through ``modelhost.cli.main``) against the real S3 (moto) and GCS
(emulator) servers on loopback, with the entry in ``STORAGE_CONFIG`` as the rendered pod's
storage initializer gets it, and check the model's files arrive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from storage_servers import MODEL_FILES, GcsServer, S3Server, closed_port, read_tree

from modelhost import errors
from modelhost.cli import main
from modelhost.storage.storage_config import StorageLocation, resolve_storage, storage_entry

MINIO = {
    "type": "s3",
    "access_key_id": "minio",
    "secret_access_key": "minio123",
    "endpoint_url": "http://minio:9000",
    "bucket": "mlpipeline",
    "region": "us-south",
}


# -- the resolver ------------------------------------------------------------------------


def test_the_entry_with_the_parameters_over_it() -> None:
    environ = {
        "STORAGE_CONFIG": json.dumps({**MINIO, "anonymous": False}),
        "STORAGE_OVERRIDE_CONFIG": json.dumps({"bucket": "example-models"}),
    }
    assert storage_entry(environ) == {
        **MINIO,
        "anonymous": "false",
        "bucket": "example-models",
    }
    assert storage_entry({}) is None
    # KServe's optional fallback key may be missing: the parameters alone describe it.
    only = {"STORAGE_OVERRIDE_CONFIG": '{"type": "s3", "bucket": "b"}'}
    assert storage_entry(only) == {"type": "s3", "bucket": "b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "STORAGE_CONFIG is not valid JSON"), ("[1]", "must be a JSON object")],
)
def test_a_malformed_entry_names_its_variable(text: str, message: str) -> None:
    with pytest.raises(errors.StorageError, match=message):
        storage_entry({"STORAGE_CONFIG": text})


def test_an_s3_entry_is_kserves_variables_and_the_bucket_uri() -> None:
    location = resolve_storage(MINIO, path="/sklearn/model")
    assert location == StorageLocation(
        uri="s3://mlpipeline/sklearn/model",
        environ={
            "AWS_ENDPOINT_URL_S3": "",
            "S3_ENDPOINT": "",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "AWS_SESSION_TOKEN": "",
            "AWS_ACCESS_KEY_ID": "minio",
            "AWS_SECRET_ACCESS_KEY": "minio123",
            "AWS_DEFAULT_REGION": "us-south",
        },
    )


def test_a_gs_entry_locates_the_model_in_its_bucket() -> None:
    entry = {"type": "gs", "bucket": "models", "endpoint_url": "http://127.0.0.1:1"}
    location = resolve_storage(entry, path="iris")
    assert location.uri == "gs://models/iris"
    assert location.environ == {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:1"}


def test_with_a_uri_the_entry_brings_only_its_credentials() -> None:
    location = resolve_storage({"access_key_id": "k"}, uri="s3://bucket/m")
    assert (location.uri, location.environ["AWS_ACCESS_KEY_ID"]) == ("s3://bucket/m", "k")
    with pytest.raises(errors.StorageError, match="does not match"):
        resolve_storage({"type": "gs"}, uri="s3://bucket/m")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "hdfs"}, "storage type 'hdfs'"),
        ({"type": "webhdfs", "bucket": "b"}, "supported types are s3, gs"),
        ({"bucket": "b"}, "names no type"),
        ({"type": "s3"}, "needs a bucket"),
    ],
)
def test_what_cannot_be_resolved_says_why(entry: dict[str, str], message: str) -> None:
    with pytest.raises(errors.StorageError, match=message):
        resolve_storage(entry, path="m")


def test_modelmeshs_default_bucket_is_the_bucket() -> None:
    assert resolve_storage({"type": "s3", "default_bucket": "mm"}, path="m").uri == "s3://mm/m"


# -- modelhost fetch, for real -----------------------------------------------------------


@pytest.fixture
def fetch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's environment: no user cache, no storage credentials but the entry's."""
    monkeypatch.setenv("MODELHOST_CACHE_DIR", str(tmp_path / "unused-cache"))
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3_", "STORAGE_", "GOOGLE_")):
            monkeypatch.delenv(name)


def _entry(s3: S3Server, **fields: str) -> str:
    return json.dumps(
        {
            "type": "s3",
            "endpoint_url": s3.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "region": "us-east-1",
            **fields,
        }
    )


@pytest.mark.usefixtures("fetch_env")
def test_fetch_resolves_a_storage_spec_in_a_real_process(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="sklearn/")
    dest = tmp_path / "mnt" / "models"
    env = {
        **os.environ,
        "STORAGE_CONFIG": _entry(s3),
        "STORAGE_OVERRIDE_CONFIG": json.dumps({"bucket": s3_bucket}),
        "S3_MAX_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "fetch", "--storage-path", "sklearn", str(dest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert read_tree(dest) == MODEL_FILES
    assert f"s3://{s3_bucket}/sklearn is in {dest}" in result.stderr
    assert "testing" not in result.stderr  # no credential is ever printed


@pytest.mark.usefixtures("fetch_env")
def test_the_entrys_endpoint_wins_over_the_pods_own(
    s3: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    # The pod's own endpoint variable, which the S3 client would prefer, leads nowhere.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("STORAGE_CONFIG", _entry(s3, bucket=s3_bucket))
    dest = tmp_path / "models"
    assert main(["fetch", "--storage-path", "/m", str(dest)]) == 0
    assert read_tree(dest) == MODEL_FILES


@pytest.mark.usefixtures("fetch_env")
def test_a_storage_uri_is_fetched_with_the_entrys_credentials(
    s3: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    monkeypatch.setenv("S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("STORAGE_CONFIG", _entry(s3))
    dest = tmp_path / "models"
    assert main(["fetch", f"s3://{s3_bucket}/m", str(dest)]) == 0
    assert read_tree(dest) == MODEL_FILES


@pytest.mark.usefixtures("fetch_env")
def test_a_gs_entry_fetches_from_its_endpoint(
    gcs_server: GcsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    gcs_server.upload(bucket, MODEL_FILES, prefix="iris/")
    entry = {"type": "gs", "bucket": bucket, "endpoint_url": gcs_server.endpoint}
    monkeypatch.setenv("STORAGE_CONFIG", json.dumps(entry))
    dest = tmp_path / "models"
    assert main(["fetch", "--storage-path", "iris", str(dest)]) == 0
    assert read_tree(dest) == MODEL_FILES


@pytest.mark.usefixtures("fetch_env")
def test_fetch_names_a_type_it_cannot_fetch_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STORAGE_CONFIG", json.dumps({"type": "hdfs", "bucket": "b"}))
    assert main(["fetch", "--storage-path", "m", str(tmp_path / "models")]) == 1
    assert "storage type 'hdfs'" in capsys.readouterr().err


@pytest.mark.usefixtures("fetch_env")
def test_fetch_without_the_secrets_entry_or_parameters_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fetch", "--storage-path", "m", str(tmp_path / "models")]) == 1
    assert "STORAGE_CONFIG" in capsys.readouterr().err
    assert main(["fetch", str(tmp_path / "models")]) == 1
    assert "storageUri or --storage-path" in capsys.readouterr().err
