"""gs:// against a real GCS API (gcp-storage-emulator): folders, single objects, errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from storage_servers import MODEL_FILES, GcsServer, read_tree, storage_settings

from modelhost import errors
from modelhost.storage import download


@pytest.fixture
def gcs_bucket(gcs_server: GcsServer) -> str:
    name = f"models-{uuid.uuid4().hex[:10]}"
    gcs_server.upload(name, MODEL_FILES, prefix="resnet/")
    return name


def test_folder_with_subfolders_is_fetched_byte_for_byte(
    gcs_server: GcsServer, gcs_bucket: str, tmp_path: Path
) -> None:
    path = download(f"gs://{gcs_bucket}/resnet", storage_settings(tmp_path, gcs_server.env()))

    assert read_tree(path) == MODEL_FILES


def test_a_single_object_comes_in_a_folder_of_its_own(
    gcs_server: GcsServer, gcs_bucket: str, tmp_path: Path
) -> None:
    uri = f"gs://{gcs_bucket}/resnet/sub/weights.bin"

    path = download(uri, storage_settings(tmp_path, gcs_server.env()))

    assert read_tree(path) == {"weights.bin": MODEL_FILES["sub/weights.bin"]}


def test_the_same_content_is_one_entry_and_a_change_is_another(
    gcs_server: GcsServer, gcs_bucket: str, tmp_path: Path
) -> None:
    settings = storage_settings(tmp_path, gcs_server.env())
    first = download(f"gs://{gcs_bucket}/resnet", settings)
    assert download(f"gs://{gcs_bucket}/resnet/", settings) == first

    gcs_server.upload(gcs_bucket, {"config.json": b"{}"}, prefix="resnet/")
    second = download(f"gs://{gcs_bucket}/resnet", settings)

    assert second != first
    assert read_tree(second) == {**MODEL_FILES, "config.json": b"{}"}


def test_a_missing_prefix_is_not_found(
    gcs_server: GcsServer, gcs_bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(errors.StorageNotFound, match=f"gs://{gcs_bucket}/nothing"):
        download(f"gs://{gcs_bucket}/nothing", storage_settings(tmp_path, gcs_server.env()))


def test_a_missing_bucket_is_not_found(gcs_server: GcsServer, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageNotFound, match="gs://no-such-bucket-here/m"):
        download("gs://no-such-bucket-here/m", storage_settings(tmp_path, gcs_server.env()))
