"""``hf://`` models fetched with huggingface_hub from a minimal stand-in for the Hub.

The Hugging Face Hub cannot be reached from where these tests run, so :class:`FakeHub` is a
small HTTP server on loopback that answers only the Hub endpoints ``model_info`` and
``snapshot_download`` call, the way the Hub answers them:

* ``GET /api/models/<repo>/revision/<revision>``: the commit a revision resolves to, and the
  files (with sizes when ``blobs=True``);
* ``GET /api/models/<repo>/tree/<commit>``: the file listing;
* ``HEAD``/``GET /<repo>/resolve/<commit>/<path>``: a file, with ``X-Repo-Commit``,
  ``ETag`` and ``Content-Length``;
* errors as the Hub sends them: an unknown or private repository is a 401 with
  ``X-Error-Code: RepoNotFound``, a bad token a 401 with ``X-Error-Message: Invalid
  credentials in Authorization header``, an unknown revision a 404 ``RevisionNotFound``.

It serves no Xet, LFS pointers, pagination or redirects to a CDN; what it proves is that
``HfSource`` drives the real client with the endpoint, token and revision it is given.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelhost.errors import StorageAccessDenied, StorageError, StorageNotFound, StorageUnreachable
from modelhost.settings import StorageSettings
from modelhost.storage._hf import HfSource

OLD_COMMIT = "1" * 40
NEW_COMMIT = "2" * 40
TOKEN = "hf_modelhost_test_token"


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]]
    refs: dict[str, str]
    token: str | None = None


@dataclass
class FakeHub:
    repos: dict[str, Repo]
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            hub.requests.append((self.command, parsed.path, self.headers.get("Authorization")))
            query = urllib.parse.parse_qs(parsed.query)
            parts = [urllib.parse.unquote(part) for part in parsed.path.strip("/").split("/")]
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, action, revision = "/".join(parts[2:4]), parts[4], parts[5]
            elif len(parts) >= 5 and parts[2] == "resolve":
                repo_id, action, revision = "/".join(parts[:2]), "resolve", parts[3]
            else:
                self._error(404, "EntryNotFound")
                return
            repo = hub.repos.get(repo_id)
            authorization = self.headers.get("Authorization")
            if repo is None or (repo.token is not None and authorization is None):
                self._error(401, "RepoNotFound")
                return
            if repo.token is not None and authorization != f"Bearer {repo.token}":
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            commit = repo.refs.get(revision, revision)
            if commit not in repo.commits:
                self._error(404, "RevisionNotFound")
                return
            files = repo.commits[commit]
            if action == "revision":
                with_sizes = query.get("blobs", [""])[0].lower() == "true"
                siblings = [
                    {"rfilename": name, **({"size": len(data)} if with_sizes else {})}
                    for name, data in files.items()
                ]
                self._json({"id": repo_id, "sha": commit, "siblings": siblings}, body)
            elif action == "tree":
                listing = [
                    {"type": "file", "oid": _blob_id(data), "size": len(data), "path": name}
                    for name, data in files.items()
                ]
                self._json(listing, body)
            else:
                path = "/".join(parts[4:])
                if path not in files:
                    self._error(404, "EntryNotFound")
                    return
                self._send(200, files[path], body, "application/octet-stream", commit, path)

        def _send(
            self,
            status: int,
            data: bytes,
            body: bool,
            content_type: str,
            commit: str | None = None,
            path: str | None = None,
            extra: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if commit is not None and path is not None:
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{_blob_id(data)}"')
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _json(self, value: Any, body: bool) -> None:
            self._send(200, json.dumps(value).encode(), body, "application/json")

        def _error(self, status: int, code: str | None, message: str | None = None) -> None:
            headers = {"X-Error-Code": code} if code else {}
            if message:
                headers["X-Error-Message"] = message
            data = json.dumps({"error": message or code}).encode()
            self._send(status, data, self.command != "HEAD", "application/json", extra=headers)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    repos = {
        "org/tiny": Repo(
            commits={
                OLD_COMMIT: {"config.json": b'{"v": 1}', "model.safetensors": b"OLD" * 10},
                NEW_COMMIT: {"config.json": b'{"v": 2}', "model.safetensors": b"NEW" * 1000},
            },
            refs={"main": NEW_COMMIT, "v1": OLD_COMMIT},
        ),
        "org/private": Repo(
            commits={NEW_COMMIT: {"weights.bin": b"SECRET"}}, refs={"main": NEW_COMMIT}, token=TOKEN
        ),
    }
    state = FakeHub(repos)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


class RecordingProgress:
    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0

    def set_total(self, nbytes: int | None) -> None:
        self.total = nbytes

    def update(self, nbytes: int) -> None:
        self.done += nbytes


def source(uri: str, endpoint: str, **environ: str) -> HfSource:
    return HfSource(uri, StorageSettings(environ={"HF_ENDPOINT": endpoint, **environ}))


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_fetch_downloads_the_files_of_the_resolved_commit(hub: FakeHub, tmp_path: Path) -> None:
    model = source("hf://org/tiny", hub.url)
    assert model.identity() == NEW_COMMIT
    progress = RecordingProgress()
    model.fetch(tmp_path, progress)

    # No bookkeeping (.cache/huggingface) is left next to the model files.
    assert listing(tmp_path) == ["config.json", "model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == b"NEW" * 1000
    assert progress.total == progress.done == 3000 + len(b'{"v": 2}')
    # Files were asked for by commit, so a branch moving mid-fetch cannot mix two commits.
    resolved = [path for method, path, _ in hub.requests if "/resolve/" in path]
    assert resolved
    assert all(f"/resolve/{NEW_COMMIT}/" in path for path in resolved)


def test_revision_pins_a_tag_or_a_commit(hub: FakeHub, tmp_path: Path) -> None:
    tagged = source("hf://org/tiny:v1", hub.url)
    assert tagged.identity() == OLD_COMMIT
    tagged.fetch(tmp_path / "tag", RecordingProgress())
    assert (tmp_path / "tag" / "config.json").read_bytes() == b'{"v": 1}'

    requests_before = len(hub.requests)
    pinned = source(f"hf://org/tiny:{OLD_COMMIT}", hub.url)
    assert pinned.identity() == OLD_COMMIT
    assert len(hub.requests) == requests_before  # a commit id needs no look-up
    pinned.fetch(tmp_path / "commit", RecordingProgress())
    assert (tmp_path / "commit" / "model.safetensors").read_bytes() == b"OLD" * 10


def test_unknown_repository_or_revision_is_not_found(hub: FakeHub) -> None:
    with pytest.raises(StorageNotFound, match="org/missing"):
        source("hf://org/missing", hub.url).identity()
    with pytest.raises(StorageNotFound, match="Revision Not Found"):
        source("hf://org/tiny:no-such-branch", hub.url).identity()


def test_private_repository_needs_the_token_from_the_settings(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token in the process environment is not the settings' environment: not used.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(StorageNotFound, match="needs HF_TOKEN"):
        source("hf://org/private", hub.url).identity()
    with pytest.raises(StorageAccessDenied, match="401"):
        source("hf://org/private", hub.url, HF_TOKEN="hf_wrong").identity()

    del hub.requests[:]
    model = source("hf://org/private", hub.url, HUGGING_FACE_HUB_TOKEN=TOKEN)
    model.fetch(tmp_path, RecordingProgress())
    assert (tmp_path / "weights.bin").read_bytes() == b"SECRET"
    assert {auth for _, _, auth in hub.requests} == {f"Bearer {TOKEN}"}


def test_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StorageUnreachable, match="cannot reach"):
        source("hf://org/tiny", f"http://127.0.0.1:{port}").identity()
    assert time.monotonic() - started < 5


def test_malformed_uris_are_refused() -> None:
    for bad in ("hf://", "hf://a/b/c", "s3://org/model"):
        with pytest.raises(StorageError):
            HfSource(bad, StorageSettings())
