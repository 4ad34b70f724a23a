"""http(s):// against a real HTTP server: single files, archives, the cache, the errors."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from storage_servers import MODEL_FILES, HttpServer, closed_port, read_tree, storage_settings

from modelhost import errors
from modelhost.storage import download


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def test_a_file_comes_in_a_folder_of_its_own(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL_FILES["model.joblib"])

    path = download(f"{http_server.url}/model.onnx", storage_settings(tmp_path, {}))

    assert read_tree(path) == {"model.onnx": MODEL_FILES["model.joblib"]}


@pytest.mark.parametrize("name", ["model.zip", "model.tar.gz", "model.tgz"])
def test_archives_are_unpacked(http_server: HttpServer, tmp_path: Path, name: str) -> None:
    data = _zip(MODEL_FILES) if name.endswith(".zip") else _tar_gz(MODEL_FILES)
    (http_server.root / name).write_bytes(data)

    path = download(f"{http_server.url}/{name}", storage_settings(tmp_path, {}))

    assert read_tree(path) == MODEL_FILES


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("evil.zip", _zip({"ok.txt": b"fine", "../../escaped.txt": b"pwned"})),
        ("evil.tar.gz", _tar_gz({"ok.txt": b"fine", "../escaped.txt": b"pwned"})),
        ("abs.tar.gz", _tar_gz({"/tmp/escaped.txt": b"pwned"})),
        ("link.tar.gz", _tar_gz({"ok.txt": b"fine"}, links={"sub/link": "../../outside"})),
    ],
)
def test_an_archive_reaching_outside_the_folder_is_refused(
    http_server: HttpServer, tmp_path: Path, name: str, data: bytes
) -> None:
    (http_server.root / name).write_bytes(data)
    cache = tmp_path / "cache"

    with pytest.raises(errors.StorageError, match="outside the model folder"):
        download(f"{http_server.url}/{name}", storage_settings(tmp_path, {}))

    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
    assert not any((cache / "models").iterdir())  # nothing half-made is left as an entry
    assert not any((cache / "tmp").iterdir())


def test_a_second_download_is_a_cache_hit_without_a_get(
    http_server: HttpServer, tmp_path: Path
) -> None:
    (http_server.root / "model.onnx").write_bytes(b"weights")
    settings = storage_settings(tmp_path, {})

    first = download(f"{http_server.url}/model.onnx", settings)
    second = download(f"{http_server.url}/model.onnx", settings)

    assert second == first
    assert http_server.gets("/model.onnx") == 1


def test_a_changed_file_is_fetched_again(http_server: HttpServer, tmp_path: Path) -> None:
    model = http_server.root / "model.onnx"
    model.write_bytes(b"weights v1")
    settings = storage_settings(tmp_path, {})
    first = download(f"{http_server.url}/model.onnx", settings)

    model.write_bytes(b"weights v2")
    later = model.stat().st_mtime + 10  # Last-Modified has one-second resolution
    os.utime(model, (later, later))
    second = download(f"{http_server.url}/model.onnx", settings)

    assert second != first
    assert (second / "model.onnx").read_bytes() == b"weights v2"
    assert http_server.gets("/model.onnx") == 2


def test_per_host_headers_are_sent(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(b"weights")
    environ = {"127.0.0.1-headers": json.dumps({"Authorization": "Bearer sesame"})}

    download(f"{http_server.url}/model.onnx", storage_settings(tmp_path, environ))

    assert http_server.requests
    assert all(r.headers.get("authorization") == "Bearer sesame" for r in http_server.requests)


def test_a_missing_file_is_not_found(http_server: HttpServer, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageNotFound, match=r"/absent\.onnx"):
        download(f"{http_server.url}/absent.onnx", storage_settings(tmp_path, {}))


def test_a_forbidden_file_is_access_denied(http_server: HttpServer, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageAccessDenied, match="403") as caught:
        download(f"{http_server.url}/forbidden/model.onnx", storage_settings(tmp_path, {}))
    assert "127.0.0.1-headers" not in str(caught.value)  # none were configured


def test_an_unreachable_server_names_it(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{closed_port()}"

    with pytest.raises(errors.StorageUnreachable, match=server):
        download(f"{server}/model.onnx", storage_settings(tmp_path, {}))


def test_a_url_without_a_file_name_is_refused(http_server: HttpServer, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match="names no file"):
        download(f"{http_server.url}/", storage_settings(tmp_path, {}))


def test_an_archive_may_hold_a_file_of_its_own_name(
    http_server: HttpServer, tmp_path: Path
) -> None:
    files = {"model.zip": b"an inner file, not the archive", "a.txt": b"a"}
    (http_server.root / "model.zip").write_bytes(_zip(files))

    path = download(f"{http_server.url}/model.zip", storage_settings(tmp_path, {}))

    assert read_tree(path) == files
