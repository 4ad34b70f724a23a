"""Storage fixtures: real S3, GCS, Azure and HTTP servers on loopback, stopped after use."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_servers import (
    AzureServer,
    GcsServer,
    HttpServer,
    S3Server,
    azurite_missing,
    start_azurite,
    start_gcs,
    start_http,
    start_s3,
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Server]:
    """The S3 server, with its request log cleared and no slow reads, for one test."""
    s3_server.requests.clear()
    s3_server.fast_reads()
    yield s3_server
    s3_server.fast_reads()


@pytest.fixture
def s3_bucket(s3: S3Server) -> str:
    """A fresh, empty bucket on the S3 server."""
    name = unique("models")
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsServer]:
    server = start_gcs()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    reason = azurite_missing()
    if reason:
        pytest.skip(reason)
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    """A static file server over an empty folder the test fills."""
    root = tmp_path / "www"
    root.mkdir()
    server = start_http(root)
    yield server
    server.stop()
