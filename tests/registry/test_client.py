"""Kubeflow's official Model Registry client, unchanged, against the registry over a socket.

The client (``model-registry`` 0.3.18) registers, reads, archives and pages through models as
it would against Kubeflow's own server; each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from official_registry_client import official_client
from registry_support import serve_registry

pytestmark = pytest.mark.filterwarnings("ignore:User access token is missing:UserWarning")


def test_register_read_and_archive_with_the_official_client(database_url: str) -> None:
    with (
        serve_registry(database_url) as port,
        official_client("http://127.0.0.1", port, author="ada", is_secure=False) as registry,
    ):
        model = registry.register_model(
            "iris",
            "s3://models/iris/1",
            model_format_name="sklearn",
            model_format_version="1",
            version="v1",
            version_description="first fit",
            metadata={"accuracy": 0.97, "epochs": 12, "framework": "sklearn", "tuned": True},
            owner="team-ml",
        )
        assert model.name == "iris"
        assert model.id is not None
        assert model.owner == "team-ml"

        found = registry.get_registered_model("iris")
        assert found is not None
        assert found.id == model.id
        version = registry.get_model_version("iris", "v1")
        assert version is not None
        assert version.author == "ada"
        assert version.description == "first fit"
        assert version.custom_properties == {
            "accuracy": 0.97,
            "epochs": 12,
            "framework": "sklearn",
            "tuned": True,
        }
        artifact = registry.get_model_artifact("iris", "v1")
        assert artifact is not None
        assert artifact.uri == "s3://models/iris/1"
        assert artifact.model_format_name == "sklearn"
        assert artifact.model_format_version == "1"

        version.state = "ARCHIVED"
        archived = registry.update(version)
        assert archived.state == "ARCHIVED"
        again = registry.get_model_version("iris", "v1")
        assert again is not None
        assert again.state == "ARCHIVED"
        assert int(again.last_update_time_since_epoch or 0) >= int(
            again.create_time_since_epoch or 0
        )

        assert registry.get_registered_model("no-such-model") is None
        assert registry.get_model_version("iris", "v9") is None


def test_listing_and_paging_with_the_official_client(database_url: str) -> None:
    with (
        serve_registry(database_url) as port,
        official_client("http://127.0.0.1", port, author="ada", is_secure=False) as registry,
    ):
        names = [f"model-{i}" for i in range(5)]
        for name in names:
            registry.register_model(
                name,
                f"s3://models/{name}",
                model_format_name="onnx",
                model_format_version="1",
                version="v1",
            )
        for extra in ("v2", "v3"):
            registry.register_model(
                "model-0",
                f"s3://models/model-0/{extra}",
                model_format_name="onnx",
                model_format_version="1",
                version=extra,
            )

        # Pages of two: the pager follows nextPageToken to the end, each model once.
        paged = [m.name for m in registry.get_registered_models().page_size(2)]
        assert paged == names
        newest_first = [
            m.name for m in registry.get_registered_models().order_by_creation_time().descending()
        ]
        assert newest_first == list(reversed(names))
        versions = [v.name for v in registry.get_model_versions("model-0").page_size(2)]
        assert versions == ["v1", "v2", "v3"]


def test_the_client_with_its_own_default_runner(tmp_path: Path) -> None:
    """The client as a user runs it, with no ``async_runner`` (it then applies nest_asyncio
    to its process: so in a process of its own, not this one)."""
    script = """
import sys
from model_registry import ModelRegistry
registry = ModelRegistry("http://127.0.0.1", int(sys.argv[1]), author="ada", is_secure=False)
registry.register_model(
    "mnist", "s3://models/mnist/1", model_format_name="onnx", model_format_version="1",
    version="v1",
)
print(registry.get_model_artifact("mnist", "v1").uri)
"""
    with serve_registry(str(tmp_path / "registry.sqlite")) as port:
        done = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", script, str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "s3://models/mnist/1"
