"""Azure Blob against a real Azure API (Azurite): both URI forms, credentials, errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from storage_servers import AZURITE_ACCOUNT, MODEL_FILES, AzureServer, read_tree, storage_settings

from modelhost import errors
from modelhost.storage import download, is_remote


@pytest.fixture
def container(azure_server: AzureServer) -> str:
    name = f"models-{uuid.uuid4().hex[:10]}"
    azure_server.upload(name, MODEL_FILES, prefix="bert/")
    return name


def _env(azure_server: AzureServer, **extra: str) -> dict[str, str]:
    return {"AZURE_STORAGE_CONNECTION_STRING": azure_server.connection_string(), **extra}


def test_az_uri_fetches_the_folder_byte_for_byte(
    azure_server: AzureServer, container: str, tmp_path: Path
) -> None:
    path = download(f"az://{container}/bert", storage_settings(tmp_path, _env(azure_server)))

    assert read_tree(path) == MODEL_FILES


def test_blob_https_url_is_azure_not_plain_http(
    azure_server: AzureServer, container: str, tmp_path: Path
) -> None:
    # The account's public URL; its connection string points the client at Azurite.
    uri = f"https://{AZURITE_ACCOUNT}.blob.core.windows.net/{container}/bert/sub"
    assert is_remote(uri)

    path = download(uri, storage_settings(tmp_path, _env(azure_server)))

    assert read_tree(path) == {
        "weights.bin": MODEL_FILES["sub/weights.bin"],
        "deeper/vocab.txt": MODEL_FILES["sub/deeper/vocab.txt"],
    }


def test_a_single_blob_comes_in_a_folder_of_its_own(
    azure_server: AzureServer, container: str, tmp_path: Path
) -> None:
    uri = f"abfs://{container}/bert/model.joblib"

    path = download(uri, storage_settings(tmp_path, _env(azure_server)))

    assert read_tree(path) == {"model.joblib": MODEL_FILES["model.joblib"]}


def test_a_wrong_account_key_is_access_denied(
    azure_server: AzureServer, container: str, tmp_path: Path
) -> None:
    wrong = azure_server.connection_string(key="A" * 86 + "==")
    environ = {"AZURE_STORAGE_CONNECTION_STRING": wrong}

    with pytest.raises(errors.StorageAccessDenied) as caught:
        download(f"az://{container}/bert", storage_settings(tmp_path, environ))

    message = str(caught.value)
    assert f"az://{container}/bert" in message
    assert "AZURE_STORAGE_CONNECTION_STRING" in message
    assert "A" * 86 not in message


def test_a_missing_container_is_not_found(azure_server: AzureServer, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageNotFound, match="az://no-such-container/m"):
        download("az://no-such-container/m", storage_settings(tmp_path, _env(azure_server)))


def test_az_without_an_account_says_how_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        download("az://models/bert", storage_settings(tmp_path, {}))
