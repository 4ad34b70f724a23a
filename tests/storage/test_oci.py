"""``oci://`` models pulled from a real registry: modelcar images, ORAS artifacts, auth, errors.

Every test pushes its own image into a ``docker-registry`` running on loopback (see
``oci_registry.py``) and fetches it with ``OciSource``, as the storage layer does.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from oci_registry import (
    HTPASSWD_LINE,
    HTPASSWD_PASSWORD,
    HTPASSWD_USER,
    Registry,
    blob_path,
    push_blob,
    push_image,
    push_index,
    push_manifest,
    running_registry,
    running_token_service,
    tar_layer,
)

from modelhost.errors import StorageAccessDenied, StorageError, StorageNotFound, StorageUnreachable
from modelhost.settings import StorageSettings
from modelhost.storage._errors import ArchiveTooLarge
from modelhost.storage._oci import OciSource
from modelhost.storage._oci.reference import is_plain_http, parse_reference

MODEL_LAYER = {"models/": None, "models/model.joblib": b"MODEL", "models/sub/config.json": "{}"}
BASE_LAYER = {"bin/": None, "bin/sh": b"#!/bin/busybox", "etc/passwd": "root:x:0:0"}


class RecordingProgress:
    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0

    def set_total(self, nbytes: int | None) -> None:
        self.total = nbytes

    def update(self, nbytes: int) -> None:
        self.done += nbytes


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def source(uri: str, **environ: str) -> OciSource:
    return OciSource(uri, StorageSettings(environ=environ))


def fetch(uri: str, dest: Path, **environ: str) -> RecordingProgress:
    dest.mkdir()
    progress = RecordingProgress()
    source(uri, **environ).fetch(dest, progress)
    return progress


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_modelcar_image_gives_its_models_folder(registry: Registry, tmp_path: Path) -> None:
    layers = [tar_layer(BASE_LAYER), tar_layer(MODEL_LAYER)]
    digest, _ = push_image(registry, "modelcar/iris", "v1", layers)
    uri = f"oci://{registry.host}/modelcar/iris:v1"

    assert source(uri).identity() == digest
    progress = fetch(uri, tmp_path / "model")

    assert listing(tmp_path / "model") == ["model.joblib", "sub", "sub/config.json"]
    assert (tmp_path / "model" / "model.joblib").read_bytes() == b"MODEL"
    assert progress.total == sum(len(layer) for layer in layers) == progress.done


def test_docker_schema2_image(registry: Registry, tmp_path: Path) -> None:
    push_image(registry, "modelcar/docker", "v1", [tar_layer(MODEL_LAYER)], docker=True)
    fetch(f"oci://{registry.host}/modelcar/docker:v1", tmp_path / "model")
    assert listing(tmp_path / "model") == ["model.joblib", "sub", "sub/config.json"]


def test_image_index_picks_linux_amd64(registry: Registry, tmp_path: Path) -> None:
    arm, _ = push_image(
        registry,
        "modelcar/multi",
        "arm",
        [tar_layer({"models/arch": "arm64"})],
        architecture="arm64",
    )
    amd, _ = push_image(registry, "modelcar/multi", "amd", [tar_layer({"models/arch": "amd64"})])
    attestation, _ = push_image(registry, "modelcar/multi", "att", [tar_layer({"x": "sbom"})])
    entries = [
        (attestation, "unknown", "unknown"),
        (arm, "linux", "arm64"),
        (amd, "linux", "amd64"),
    ]
    index = push_index(registry, "modelcar/multi", "v1", entries)
    uri = f"oci://{registry.host}/modelcar/multi:v1"

    assert source(uri).identity() == index
    fetch(uri, tmp_path / "model")
    assert (tmp_path / "model" / "arch").read_text() == "amd64"


def test_image_without_models_folder_gives_everything(registry: Registry, tmp_path: Path) -> None:
    push_image(registry, "plain/files", "v1", [tar_layer({"model.onnx": b"ONNX", "cfg/": None})])
    fetch(f"oci://{registry.host}/plain/files:v1", tmp_path / "model")
    assert listing(tmp_path / "model") == ["cfg", "model.onnx"]


def test_later_layers_override_and_white_out(registry: Registry, tmp_path: Path) -> None:
    lower = tar_layer(
        {"models/a": "a", "models/b": "old", "models/d/x": "x", "models/d/keep/y": "y"}
    )
    upper = tar_layer(
        {
            "models/.wh.a": "",
            "models/b": "new",
            # The opaque marker hides the lower d/ but not what this layer puts there.
            "models/d/keep/z": "z",
            "models/d/.wh..wh..opq": "",
        }
    )
    push_image(registry, "modelcar/whiteout", "v1", [lower, upper])
    fetch(f"oci://{registry.host}/modelcar/whiteout:v1", tmp_path / "model")

    assert listing(tmp_path / "model") == ["b", "d", "d/keep", "d/keep/z"]
    assert (tmp_path / "model" / "b").read_text() == "new"


def test_links_stay_inside_the_model(registry: Registry, tmp_path: Path) -> None:
    layer = tar_layer(
        {"models/v2/weights.bin": b"W"},
        links={"models/latest": "/models/v2", "models/rel": "v2/weights.bin"},
        hardlinks={"models/copy.bin": "models/v2/weights.bin"},
    )
    push_image(registry, "modelcar/links", "v1", [layer])
    model = tmp_path / "model"
    fetch(f"oci://{registry.host}/modelcar/links:v1", model)

    assert (model / "latest" / "weights.bin").read_bytes() == b"W"
    assert os.readlink(model / "latest") == "v2"
    assert (model / "rel").read_bytes() == b"W"
    assert (model / "copy.bin").stat().st_ino == (model / "v2" / "weights.bin").stat().st_ino


def test_symlink_out_of_the_model_is_refused(registry: Registry, tmp_path: Path) -> None:
    layer = tar_layer({"models/model.bin": b"M"}, links={"models/passwd": "/etc/passwd"})
    push_image(registry, "modelcar/escape", "v1", [layer])
    with pytest.raises(StorageError, match="points outside the model"):
        fetch(f"oci://{registry.host}/modelcar/escape:v1", tmp_path / "model")


@pytest.mark.parametrize(
    ("entry", "reason"), [("../evil.txt", "climbs out"), ("/etc/evil.txt", "absolute path")]
)
def test_path_traversal_layer_is_refused(
    registry: Registry, tmp_path: Path, entry: str, reason: str
) -> None:
    repository = f"evil/traversal{len(entry)}"
    push_image(registry, repository, "v1", [tar_layer({"models/ok": "ok", entry: "pwned"})])
    with pytest.raises(StorageError, match=reason):
        fetch(f"oci://{registry.host}/{repository}:v1", tmp_path / "model")
    assert not (tmp_path / "evil.txt").exists()


def test_symlinked_folder_cannot_carry_writes_out(registry: Registry, tmp_path: Path) -> None:
    # From <dest>/.oci-rootfs-*/models/out, three levels up is tmp_path, beside the model.
    first = tar_layer({"models/": None}, links={"models/out": "../../../outside"})
    second = tar_layer({"models/out/pwned.txt": "pwned"})
    push_image(registry, "evil/symlinkdir", "v1", [first, second])
    (tmp_path / "outside").mkdir()
    with pytest.raises(StorageError, match="symlink out"):
        fetch(f"oci://{registry.host}/evil/symlinkdir:v1", tmp_path / "model")
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_layer_that_unpacks_past_the_limit_is_refused(registry: Registry, tmp_path: Path) -> None:
    # 80 MiB of zeros gzip to 80 KiB: past MODELHOST_MAX_UNPACK_RATIO's default of 100.
    layer = tar_layer({"models/": None, "models/weights.bin": bytes(80 * 1024 * 1024)})
    assert len(layer) < 1024 * 1024
    push_image(registry, "evil/bomb", "v1", [tar_layer(BASE_LAYER), layer])
    with pytest.raises(ArchiveTooLarge, match="MODELHOST_MAX_UNPACK_RATIO"):
        fetch(f"oci://{registry.host}/evil/bomb:v1", tmp_path / "model")

    dest = tmp_path / "capped"
    dest.mkdir()
    small = StorageSettings(max_unpack_bytes=64 * 1024)
    push_image(registry, "evil/big", "v1", [tar_layer({"models/w.bin": bytes(128 * 1024)})])
    with pytest.raises(ArchiveTooLarge, match="MODELHOST_MAX_UNPACK_BYTES"):
        OciSource(f"oci://{registry.host}/evil/big:v1", small).fetch(dest, RecordingProgress())


def test_artifact_pushed_with_oras(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oras.provider import Registry as OrasRegistry

    (tmp_path / "push" / "tokenizer").mkdir(parents=True)
    (tmp_path / "push" / "model.onnx").write_bytes(b"ONNX")
    (tmp_path / "push" / "tokenizer" / "vocab.txt").write_text("a b c")
    # oras-py pushes files named relative to the working directory.
    monkeypatch.chdir(tmp_path / "push")
    OrasRegistry(hostname=registry.host, insecure=True).push(
        f"{registry.host}/artifacts/bert:v1", files=["model.onnx", "tokenizer"], quiet=True
    )

    fetch(f"oci://{registry.host}/artifacts/bert:v1", tmp_path / "model")
    assert listing(tmp_path / "model") == ["model.onnx", "tokenizer", "tokenizer/vocab.txt"]
    assert (tmp_path / "model" / "tokenizer" / "vocab.txt").read_text() == "a b c"


def test_identity_is_stable_and_follows_the_tag(registry: Registry, tmp_path: Path) -> None:
    first, _ = push_image(registry, "modelcar/moving", "latest", [tar_layer({"models/v": "1"})])
    uri = f"oci://{registry.host}/modelcar/moving"  # no tag: latest
    assert source(uri).identity() == source(uri).identity() == first

    second, _ = push_image(registry, "modelcar/moving", "latest", [tar_layer({"models/v": "2"})])
    assert second != first
    assert source(uri).identity() == second
    fetch(uri, tmp_path / "now")
    assert (tmp_path / "now" / "v").read_text() == "2"

    # Pinned by digest, the old content is still what the URI names.
    pinned = source(f"oci://{registry.host}/modelcar/moving@{first}")
    assert pinned.identity() == first
    fetch(f"oci://{registry.host}/modelcar/moving@{first}", tmp_path / "pinned")
    assert (tmp_path / "pinned" / "v").read_text() == "1"


def test_fetch_pulls_the_digest_identity_resolved(registry: Registry, tmp_path: Path) -> None:
    first, _ = push_image(registry, "modelcar/race", "v1", [tar_layer({"models/v": "1"})])
    resolved = source(f"oci://{registry.host}/modelcar/race:v1")
    assert resolved.identity() == first
    push_image(registry, "modelcar/race", "v1", [tar_layer({"models/v": "2"})])
    (tmp_path / "model").mkdir()
    resolved.fetch(tmp_path / "model", RecordingProgress())
    assert (tmp_path / "model" / "v").read_text() == "1"


def test_unknown_repository_and_tag_are_not_found(registry: Registry) -> None:
    push_image(registry, "modelcar/known", "v1", [tar_layer({"models/v": "1"})])
    with pytest.raises(StorageNotFound, match="not found"):
        source(f"oci://{registry.host}/modelcar/unknown:v1").identity()
    with pytest.raises(StorageNotFound):
        source(f"oci://{registry.host}/modelcar/known:v2").identity()


def test_closed_port_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StorageUnreachable, match="cannot reach"):
        source(f"oci://127.0.0.1:{port}/modelcar/iris:v1").identity()
    assert time.monotonic() - started < 5


def test_corrupt_blob_fails_the_digest_check(registry: Registry, tmp_path: Path) -> None:
    layer = tar_layer({"models/model.bin": b"GOOD" * 100})
    _, manifest = push_image(registry, "modelcar/corrupt", "v1", [layer])
    stored = blob_path(registry, manifest["layers"][0]["digest"])
    corrupted = bytearray(stored.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF  # same size, other bytes: as bit rot would do
    stored.write_bytes(bytes(corrupted))
    with pytest.raises(StorageError, match="digest mismatch"):
        fetch(f"oci://{registry.host}/modelcar/corrupt:v1", tmp_path / "model")


def test_manifest_size_larger_than_blob_fails(registry: Registry, tmp_path: Path) -> None:
    layer = tar_layer({"models/model.bin": b"M"})
    digest = push_blob(registry, "modelcar/short", layer)
    config = push_blob(registry, "modelcar/short", b"{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config,
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": len(layer) + 10,
            }
        ],
    }
    push_manifest(registry, "modelcar/short", "v1", manifest, manifest["mediaType"])
    with pytest.raises(StorageError, match="the manifest says"):
        fetch(f"oci://{registry.host}/modelcar/short:v1", tmp_path / "model")


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    folder = tmp_path_factory.mktemp("basic-registry")
    (folder / "htpasswd").write_text(HTPASSWD_LINE + "\n")
    auth = {"htpasswd": {"realm": "modelhost-tests", "path": str(folder / "htpasswd")}}
    with running_registry(folder, auth=auth) as running:
        credentials = f"{HTPASSWD_USER}:{HTPASSWD_PASSWORD}".encode()
        running.headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        push_image(running, "private/model", "v1", [tar_layer(MODEL_LAYER)])
        yield running


def test_basic_auth_credentials_from_the_environment(
    basic_registry: Registry, tmp_path: Path
) -> None:
    uri = f"oci://{basic_registry.host}/private/model:v1"
    with pytest.raises(StorageAccessDenied, match="OCI_USERNAME"):
        source(uri).identity()
    with pytest.raises(StorageAccessDenied):
        source(uri, OCI_USERNAME=HTPASSWD_USER, OCI_PASSWORD="wrong").identity()

    fetch(uri, tmp_path / "model", OCI_USERNAME=HTPASSWD_USER, OCI_PASSWORD=HTPASSWD_PASSWORD)
    assert (tmp_path / "model" / "model.joblib").read_bytes() == b"MODEL"


def test_basic_auth_from_a_docker_config(basic_registry: Registry, tmp_path: Path) -> None:
    auth = base64.b64encode(f"{HTPASSWD_USER}:{HTPASSWD_PASSWORD}".encode()).decode()
    config = {"auths": {f"http://{basic_registry.host}": {"auth": auth}}}
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))
    uri = f"oci://{basic_registry.host}/private/model:v1"

    fetch(uri, tmp_path / "model", DOCKER_CONFIG=str(tmp_path / "docker"))
    assert (tmp_path / "model" / "model.joblib").read_bytes() == b"MODEL"


def test_blob_redirect_gets_no_credentials(tmp_path: Path) -> None:
    """Registries hand blobs to S3 or a CDN with a redirect; the password must stay behind."""
    storage = tmp_path / "registry" / "data"
    storage.mkdir(parents=True)
    seen: list[str | None] = []

    class BlobStore(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    store = ThreadingHTTPServer(("127.0.0.1", 0), partial(BlobStore, directory=str(storage)))
    thread = threading.Thread(target=store.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    (tmp_path / "htpasswd").write_text(HTPASSWD_LINE + "\n")
    auth = {"htpasswd": {"realm": "modelhost-tests", "path": str(tmp_path / "htpasswd")}}
    redirect = {
        "name": "redirect",
        "options": {"baseurl": f"http://127.0.0.1:{store.server_port}/"},
    }
    try:
        with running_registry(
            tmp_path / "registry", auth=auth, middleware={"storage": [redirect]}
        ) as registry:
            credentials = f"{HTPASSWD_USER}:{HTPASSWD_PASSWORD}".encode()
            registry.headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
            push_image(registry, "private/model", "v1", [tar_layer(MODEL_LAYER)])
            environ = {"OCI_USERNAME": HTPASSWD_USER, "OCI_PASSWORD": HTPASSWD_PASSWORD}
            fetch(f"oci://{registry.host}/private/model:v1", tmp_path / "model", **environ)
    finally:
        store.shutdown()
        store.server_close()
        thread.join()
    assert (tmp_path / "model" / "model.joblib").read_bytes() == b"MODEL"
    assert seen == [None]  # the one layer came from the store, without the password


def test_bearer_token_auth(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    with (
        running_token_service(tmp_path, HTPASSWD_USER, HTPASSWD_PASSWORD) as tokens,
        running_registry(tmp_path / "registry", auth=tokens.registry_auth()) as registry,
    ):
        scope = "repository:private/model:pull,push"
        registry.headers["Authorization"] = "Bearer " + tokens.token(scope)
        push_image(registry, "private/model", "v1", [tar_layer(MODEL_LAYER)])
        uri = f"oci://{registry.host}/private/model:v1"

        with pytest.raises(StorageAccessDenied, match="refused anonymous access"):
            source(uri).identity()
        with pytest.raises(StorageAccessDenied, match="refused the credentials"):
            source(uri, OCI_USERNAME=HTPASSWD_USER, OCI_PASSWORD="wrong").identity()
        environ = {"OCI_USERNAME": HTPASSWD_USER, "OCI_PASSWORD": HTPASSWD_PASSWORD}
        fetch(uri, tmp_path / "model", **environ)
    assert (tmp_path / "model" / "model.joblib").read_bytes() == b"MODEL"


def test_references() -> None:
    hub = parse_reference("oci://busybox")
    assert (hub.registry, hub.repository, hub.tag, hub.api_host) == (
        "docker.io",
        "library/busybox",
        "latest",
        "registry-1.docker.io",
    )
    digest = "sha256:" + "a" * 64
    pinned = parse_reference(f"oci://ghcr.io/org/models/iris:v1@{digest}")
    assert (pinned.registry, pinned.repository, pinned.target) == (
        "ghcr.io",
        "org/models/iris",
        digest,
    )
    local = parse_reference("oci://localhost:5000/iris:2.0")
    assert (local.registry, local.repository, local.tag) == ("localhost:5000", "iris", "2.0")
    for bad in ("oci://ghcr.io/Org/Iris:v1", "oci://ghcr.io/org/iris@sha256:abc", "s3://b/k"):
        with pytest.raises(StorageError):
            parse_reference(bad)


def test_plain_http_only_for_loopback_or_listed_registries() -> None:
    assert is_plain_http("127.0.0.1:5000", {})
    assert is_plain_http("localhost", {})
    assert is_plain_http("[::1]:5000", {})
    assert not is_plain_http("ghcr.io", {})
    listed = {"MODELHOST_OCI_INSECURE_REGISTRIES": "registry.lan:5000, other.lan"}
    assert is_plain_http("registry.lan:5000", listed)
    assert is_plain_http("other.lan:443", listed)
    assert not is_plain_http("registry.lan:6000", listed)
