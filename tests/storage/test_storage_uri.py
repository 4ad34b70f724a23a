"""Which URIs are fetched and which are served in place; local paths, file:// and pvc://."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_servers import storage_settings

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage import download, is_remote


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/model",
        "gs://bucket/model",
        "http://example.com/model.onnx",
        "HTTPS://example.com/model.tar.gz",
        "https://account.blob.core.windows.net/container/model",
        "az://container/model",
        "abfs://container@account.dfs.core.windows.net/model",
        "hf://org/model:main",
        "oci://registry.example.com/models/iris:1.0",
        "unknown://somewhere",
    ],
)
def test_remote_uris(uri: str) -> None:
    assert is_remote(uri)


@pytest.mark.parametrize(
    "uri", ["/mnt/models", "models/iris", "file:///mnt/models", "pvc://claim/models", "C:\\models"]
)
def test_local_uris(uri: str) -> None:
    assert not is_remote(uri)


def test_paths_and_file_uris_are_served_in_place(tmp_path: Path) -> None:
    model = tmp_path / "iris"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"weights")
    settings = storage_settings(tmp_path, {})

    assert download(str(model), settings) == model
    assert download(f"file://{model}", settings) == model
    assert download(str(model / "model.joblib"), settings) == model / "model.joblib"
    assert not (tmp_path / "cache").exists()  # nothing copied


def test_a_local_path_needs_no_settings(tmp_path: Path) -> None:
    assert download(str(tmp_path)) == tmp_path


def test_a_missing_local_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageNotFound, match="nowhere"):
        download(f"file://{tmp_path}/nowhere", storage_settings(tmp_path, {}))


def test_pvc_uris_resolve_under_the_pvc_root(tmp_path: Path) -> None:
    model = tmp_path / "pvc" / "models-claim" / "iris" / "v1"
    model.mkdir(parents=True)
    settings = storage_settings(tmp_path, {})

    assert download("pvc://models-claim/iris/v1", settings) == model
    with pytest.raises(errors.StorageNotFound, match="pvc://models-claim/absent"):
        download("pvc://models-claim/absent", settings)
    with pytest.raises(errors.StorageError, match=r"without '\.\.'"):
        download("pvc://models-claim/../../etc", settings)


def test_pvc_root_defaults_to_kserve_mount(tmp_path: Path) -> None:
    settings = StorageSettings(cache_dir=str(tmp_path), environ={})
    with pytest.raises(errors.StorageNotFound, match="/mnt/pvc/claim/model"):
        download("pvc://claim/model", settings)


def test_an_unknown_scheme_names_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match=r"unsupported.*s3://.*gs://.*hf://.*pvc://"):
        download("ftp://example.com/model.onnx", storage_settings(tmp_path, {}))


def test_azure_file_shares_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match="Azure File shares are not supported"):
        download(
            "https://account.file.core.windows.net/share/model", storage_settings(tmp_path, {})
        )


def test_a_bucket_uri_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match="no bucket name"):
        download("s3:///model", storage_settings(tmp_path, {}))
