"""Azure Blob sources: ``https://<account>.blob.core.windows.net/<container>/<path>``, ``az://``.

Built on azure-storage-blob's own client rather than adlfs: adlfs gives no hold on the
SDK's retry policy, and with its defaults a listing against an endpoint that is down
took minutes to fail. Credentials follow KServe's order (a service principal, else the
account key in ``AZURE_STORAGE_ACCESS_KEY``, else anonymous), read from the settings'
environment; a connection string or a SAS token, the Azure tools' own variables, are
accepted too. ``az://`` and ``abfs://`` name the account in ``container@account.*`` or
in ``AZURE_STORAGE_ACCOUNT_NAME``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage._errors import StoreContext
from modelhost.storage._fsspec import env_number
from modelhost.storage._objects import ListedSource, RemoteFile, md5_fingerprint, relative_files
from modelhost.storage._source import Progress

__all__ = ["AzureBlobSource", "is_azure_blob_url", "is_azure_file_url"]

_BLOB_HOST = re.compile(
    r"^(?P<account>[a-z0-9]+)\.(?:blob\.core\.windows\.net|z\d{1,2}\.blob\.storage\.azure\.net)$"
)
_FILE_HOST = re.compile(
    r"^[a-z0-9]+\.(?:file\.core\.windows\.net|z\d{1,2}\.file\.storage\.azure\.net)$"
)
# Client timeouts in seconds; retries are set in _client().
_CLIENT_OPTIONS: dict[str, Any] = {"connection_timeout": 20, "read_timeout": 120}


def is_azure_blob_url(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(_BLOB_HOST.match(parts.hostname or ""))


def is_azure_file_url(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(_FILE_HOST.match(parts.hostname or ""))


class AzureBlobSource(ListedSource):
    """One blob, or every blob under a prefix, of an Azure storage container."""

    extra = "azure"

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        super().__init__(uri, settings)
        env = self.environ = settings.environ
        parts = urlsplit(uri)
        connection = _parse_connection_string(env.get("AZURE_STORAGE_CONNECTION_STRING", ""))
        if parts.scheme in ("http", "https"):
            self.container, _, self.prefix = parts.path.lstrip("/").partition("/")
            account: str | None = (parts.hostname or "").split(".")[0]
            self.account_url = f"{parts.scheme}://{parts.netloc}"
        else:
            self.container, at, host = parts.netloc.partition("@")
            self.prefix = parts.path.lstrip("/")
            account = (
                host.split(".")[0]
                if at
                else env.get("AZURE_STORAGE_ACCOUNT_NAME")
                or env.get("AZURE_ACCOUNT_NAME")
                or connection.get("accountname")
            )
            self.account_url = f"https://{account}.blob.core.windows.net"
        if not self.container:
            raise errors.StorageError(f"{uri}: no container name in the URI.")
        if not account:
            raise errors.StorageError(
                f"{uri}: which storage account? Use https://<account>.blob.core.windows.net/"
                "<container>/<path>, or set AZURE_STORAGE_ACCOUNT_NAME or "
                "AZURE_STORAGE_CONNECTION_STRING."
            )
        self.account = account
        # A connection string for this account wins: it may also name a private endpoint.
        self.connection_string = (
            env["AZURE_STORAGE_CONNECTION_STRING"]
            if connection.get("accountname") == account
            else None
        )
        self.prefix = self.prefix.strip("/")
        self._file_concurrency = max(1, int(env_number(env, "AZURE_MAX_FILE_CONCURRENCY", 4)))
        self._chunk_concurrency = max(1, int(env_number(env, "AZURE_MAX_CHUNK_CONCURRENCY", 4)))
        endpoint = connection.get("blobendpoint") if self.connection_string else None
        self._context = StoreContext(
            "Azure Blob Storage", endpoint or self.account_url, self._describe_credentials()
        )

    def context(self) -> StoreContext:
        return self._context

    def _list(self) -> list[RemoteFile]:
        with self._client() as container:
            blobs = container.list_blobs(name_starts_with=self.prefix or None, include=["metadata"])
            objects = [
                (blob.name, int(blob.size or 0), self._fingerprint(blob))
                for blob in blobs
                if (blob.metadata or {}).get("hdi_isfolder") != "true"
            ]
        return relative_files(self.prefix, objects)

    def _download(self, targets: list[tuple[RemoteFile, Path]], progress: Progress) -> None:
        with self._client() as container:

            def download(target: tuple[RemoteFile, Path]) -> None:
                remote, path = target
                path.parent.mkdir(parents=True, exist_ok=True)
                reported = 0

                def hook(current: int, total: int | None) -> None:
                    nonlocal reported
                    progress.update(current - reported)
                    reported = current

                stream = container.download_blob(
                    remote.name, max_concurrency=self._chunk_concurrency, progress_hook=hook
                )
                with open(path, "wb") as out:
                    stream.readinto(out)

            workers = min(self._file_concurrency, len(targets)) or 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(download, targets))

    def _fingerprint(self, blob: Any) -> str:
        settings = getattr(blob, "content_settings", None)
        md5 = md5_fingerprint(getattr(settings, "content_md5", None))
        # Large uploads carry no Content-MD5; the ETag then names the version.
        return md5 or f"etag:{self.account_url}/{self.container}/{blob.name}#{blob.etag}"

    def _client(self) -> Any:
        from azure.storage.blob import ContainerClient, ExponentialRetry

        # The storage SDK waits 15 s, then 18 s, ... between tries by default: an endpoint
        # that is down took 40 s to report. Shorter waits (about 1, 3, 5 s) still ride
        # out a blip.
        retry = ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
        )
        options = {**_CLIENT_OPTIONS, "retry_policy": retry}
        if self.connection_string:
            return ContainerClient.from_connection_string(
                self.connection_string, container_name=self.container, **options
            )
        return ContainerClient(
            account_url=self.account_url,
            container_name=self.container,
            credential=self._credential(),
            **options,
        )

    def _service_principal(self) -> tuple[str, str, str] | None:
        env = self.environ
        tenant = env.get("AZURE_TENANT_ID") or env.get("AZ_TENANT_ID")
        client = env.get("AZURE_CLIENT_ID") or env.get("AZ_CLIENT_ID")
        secret = env.get("AZURE_CLIENT_SECRET") or env.get("AZ_CLIENT_SECRET")
        return (tenant, client, secret) if tenant and client and secret else None

    def _account_key(self) -> str | None:
        env = self.environ
        return env.get("AZURE_STORAGE_ACCESS_KEY") or env.get("AZURE_STORAGE_ACCOUNT_KEY")

    def _credential(self) -> Any:
        principal = self._service_principal()
        if principal is not None:
            from azure.identity import ClientSecretCredential

            tenant, client, secret = principal
            return ClientSecretCredential(tenant, client, secret)
        key = self._account_key()
        if key:
            return {"account_name": self.account, "account_key": key}
        return self.environ.get("AZURE_STORAGE_SAS_TOKEN") or None

    def _describe_credentials(self) -> str:
        if self.connection_string:
            return "AZURE_STORAGE_CONNECTION_STRING"
        if self._service_principal() is not None:
            return "the service principal in AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET"
        if self.environ.get("AZURE_STORAGE_ACCESS_KEY"):
            return "the account key in AZURE_STORAGE_ACCESS_KEY"
        if self.environ.get("AZURE_STORAGE_ACCOUNT_KEY"):
            return "the account key in AZURE_STORAGE_ACCOUNT_KEY"
        if self.environ.get("AZURE_STORAGE_SAS_TOKEN"):
            return "the SAS token in AZURE_STORAGE_SAS_TOKEN"
        return "anonymous (no Azure credentials were set)"


def _parse_connection_string(text: str) -> Mapping[str, str]:
    """``Key=Value;...`` with lower-cased keys (the SDK reads them case-insensitively)."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields
