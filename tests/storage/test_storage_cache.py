"""The cache: once per content across processes, atomic, self-cleaning, usable offline."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from storage_servers import (
    MODEL_FILES,
    HttpServer,
    S3Server,
    read_tree,
    start_http,
    storage_settings,
)

from modelhost.settings import StorageSettings
from modelhost.storage import download

WORKER = Path(__file__).with_name("fetch_worker.py")


def _worker(tmp_path: Path, environ: dict[str, str], *args: str) -> subprocess.Popen[str]:
    config = tmp_path / "worker-settings.json"
    config.write_text(json.dumps({"cache_dir": str(tmp_path / "cache"), "environ": environ}))
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _listings(s3: S3Server, bucket: str) -> list[str]:
    return [r.query for r in list(s3.requests) if r.path == f"/{bucket}" and "list-type" in r.query]


def test_two_processes_fetching_one_uri_download_it_once(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    uri = f"s3://{s3_bucket}/m"
    s3.slow_reads(60)  # object reads wait until released below
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    workers = [_worker(tmp_path, s3.env(), uri, str(r), str(go)) for r in ready]
    try:
        _wait_for(lambda: all(r.exists() for r in ready), "both workers to load")
        go.touch()
        # Both have listed the prefix (their identity), so both are at the lock: one holds
        # it and is blocked reading, the other waits for it. Then the reads go through.
        _wait_for(lambda: len(_listings(s3, s3_bucket)) == 2, "both workers to list")
        time.sleep(0.3)
        s3.fast_reads()
        results = [w.communicate(timeout=60) for w in workers]
    finally:
        for w in workers:
            w.kill()
            w.wait()

    assert [w.returncode for w in workers] == [0, 0], results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    assert read_tree(Path(paths.pop())) == MODEL_FILES
    # Each object was read once, by one of the two.
    assert sorted(s3.object_gets(s3_bucket)) == sorted(f"m/{name}" for name in MODEL_FILES)
    # And the other one waited for it rather than arriving after it was done.
    assert sum("Waiting for another process or thread" in err for _, err in results) == 1, results


def test_a_killed_fetch_leaves_junk_that_the_next_fetch_clears(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    uri = f"s3://{s3_bucket}/m"
    s3.slow_reads(60)
    worker = _worker(tmp_path, s3.env(), uri)
    try:
        _wait_for(lambda: bool(s3.object_gets(s3_bucket)), "the worker to start reading")
    finally:
        worker.kill()  # SIGKILL: no cleanup code runs, the OS frees its lock
        worker.communicate()
    staging = tmp_path / "cache" / "tmp"
    assert list(staging.iterdir())
    assert not list((tmp_path / "cache" / "models").iterdir())
    s3.fast_reads()

    path = download(uri, storage_settings(tmp_path, s3.env()))

    assert read_tree(path) == MODEL_FILES
    assert not list(staging.iterdir())


def test_old_leftovers_of_other_keys_are_swept_unless_their_fetch_is_alive(
    http_server: HttpServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    (cache / "locks").mkdir()
    old = time.time() - 2 * 3600
    leftovers = {}
    for name in ("crashed.x1", "busy.x2", "young.x3"):
        folder = cache / "tmp" / name
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "part").write_bytes(b"half")
        leftovers[name] = folder
    for name in ("crashed.x1", "busy.x2"):
        os.utime(leftovers[name], (old, old))
    (http_server.root / "model.onnx").write_bytes(b"weights")

    with FileLock(cache / "locks" / "busy.lock"):  # a slow fetch still running
        download(f"{http_server.url}/model.onnx", storage_settings(tmp_path, {}))

    assert not leftovers["crashed.x1"].exists()
    assert leftovers["busy.x2"].exists()
    assert leftovers["young.x3"].exists()


def test_an_entry_is_a_model_folder_and_a_record(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(b"weights")
    uri = f"{http_server.url}/model.onnx"

    path = download(uri, storage_settings(tmp_path, {}))

    assert path.name == "model"
    assert path.parent.parent == tmp_path / "cache" / "models"
    record = json.loads((path.parent / "entry.json").read_text())
    assert record["uri"] == uri
    assert list(path.iterdir()) == [path / "model.onnx"]


def test_an_unreachable_store_falls_back_to_the_last_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"weights")
    server = start_http(root)
    uri = f"{server.url}/model.onnx"
    settings = storage_settings(tmp_path, {})
    try:
        first = download(uri, settings)
    finally:
        server.stop()

    with caplog.at_level(logging.WARNING, logger="modelhost.storage"):
        again = download(uri, settings)

    assert again == first
    assert (again / "model.onnx").read_bytes() == b"weights"
    assert any("using the copy fetched before" in r.getMessage() for r in caplog.records)


def test_two_threads_fetching_one_uri_download_it_once(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    s3.slow_reads(0.3)
    settings = storage_settings(tmp_path, s3.env())

    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: download(f"s3://{s3_bucket}/m", settings), range(2)))

    assert paths[0] == paths[1]
    assert sorted(s3.object_gets(s3_bucket)) == sorted(f"m/{name}" for name in MODEL_FILES)


@pytest.mark.parametrize(("progress", "shown"), [(True, True), (False, False), (None, False)])
def test_progress_bar_only_when_asked_or_on_a_terminal(
    http_server: HttpServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    progress: bool | None,
    shown: bool,
) -> None:
    (http_server.root / "model.onnx").write_bytes(b"w" * 50_000)
    settings = StorageSettings(cache_dir=str(tmp_path / "cache"), progress=progress, environ={})

    download(f"{http_server.url}/model.onnx", settings)

    err = capsys.readouterr().err
    if shown:
        assert "model.onnx" in err
        assert "100%" in err
    else:
        assert err == ""  # stderr is captured, not a terminal
