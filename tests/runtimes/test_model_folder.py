"""Many models per server: a repository folder, its layouts, LRU eviction, live unload/reload."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import ServeProcess, StartServer, serve_command

from modelhost import errors
from modelhost.model.repository import ModelRepository
from modelhost.runtimes.model_folder import ModelFolder, is_model_repository

ROW = [[6.8, 2.8, 4.8, 1.4]]


def _constant_model(folder: Path, answer: int, filename: str = "model.joblib") -> Path:
    """A scikit-learn model that always answers ``answer``: replies tell models apart."""
    import joblib
    from sklearn.dummy import DummyClassifier

    estimator = DummyClassifier(strategy="constant", constant=answer)
    estimator.fit([[0.0, 0.0, 0.0, 0.0]] * 3, [answer, answer + 1, answer + 2])
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, folder / filename)
    return folder


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _constant_model(root / "one", 1)
    _constant_model(root / "two", 2)
    _constant_model(root / "three", 3)
    return root


def _infer(client: httpx.Client, name: str) -> int:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW[0]}]}
    response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    return int(response.json()["outputs"][0]["data"][0])


def test_layouts_names_versions_and_settings(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _constant_model(root / "plain", 1)
    _constant_model(root / "triton" / "1", 10)
    _constant_model(root / "triton" / "3", 30)
    renamed = _constant_model(root / "folder-name", 5)
    (renamed / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "renamed",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"version": "v7"},
                "max_batch_size": 8,
                "max_batch_time": 0.002,
            }
        )
    )
    pointer = root / "pointer"
    pointer.mkdir()
    _constant_model(tmp_path / "elsewhere", 9)
    (pointer / "model-settings.json").write_text(
        json.dumps({"parameters": {"uri": "../../elsewhere"}})
    )
    (root / ".hidden").mkdir()

    assert is_model_repository(root)
    assert not is_model_repository(root / "plain")
    folder = ModelFolder(root)
    assert folder.names() == ["plain", "pointer", "renamed", "triton"]

    triton = folder.build("triton")
    assert triton.version == "3"  # type: ignore[attr-defined]
    assert triton.load()
    assert triton.predict({"instances": ROW}) == {"predictions": [30]}

    renamed_model = folder.build("renamed")
    assert renamed_model.version == "v7"  # type: ignore[attr-defined]
    assert renamed_model.batching is not None
    assert renamed_model.batching.max_batch_size == 8
    assert renamed_model.batching.max_latency_ms == pytest.approx(2.0)

    pointed = folder.build("pointer")
    assert pointed.load()
    assert pointed.predict({"instances": ROW}) == {"predictions": [9]}
    with pytest.raises(errors.ModelNotFound):
        folder.build("nope")


def test_the_listing_is_cached_and_follows_folders_added_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _constant_model(root / "a", 1)
    _constant_model(root / "b", 2)
    folder = ModelFolder(root)
    assert folder.names() == ["a", "b"]
    _constant_model(root / "c", 3)
    assert folder.names() == ["a", "b", "c"]  # found without a restart
    model = folder.build("c")
    assert model.load()
    assert model.predict({"instances": ROW}) == {"predictions": [3]}
    (root / "b").rename(root / "_b")
    assert folder.names() == ["a", "c"]
    with pytest.raises(errors.ModelNotFound):
        folder.build("b")
    with pytest.raises(errors.ModelNotFound):
        folder.build("../models/a")  # a name is one folder of the root, never a path


def test_one_model_builds_without_reading_the_other_folders(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _constant_model(root / "good", 4)
    _constant_model(root / "bad", 5)
    (root / "bad" / "model-settings.json").write_text("{not json")
    folder = ModelFolder(root)
    # The scan of all folders fails on the bad one; building another reads only its own.
    with pytest.raises(errors.ModelLoadError, match="Cannot read"):
        folder.names()
    assert folder.build("good").load()
    # A settings file changed on disk counts from the model's next build.
    (root / "good" / "model-settings.json").write_text(
        json.dumps({"parameters": {"version": "v2"}})
    )
    assert folder.build("good").version == "v2"  # type: ignore[attr-defined]


def test_bad_settings_and_duplicate_names_are_load_errors(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _constant_model(root / "a", 1)
    _constant_model(root / "b", 2)
    (root / "b" / "model-settings.json").write_text(json.dumps({"name": "a"}))
    with pytest.raises(errors.ModelLoadError, match="Two folders"):
        ModelFolder(root).names()
    (root / "b" / "model-settings.json").write_text("{not json")
    with pytest.raises(errors.ModelLoadError, match="Cannot read"):
        ModelFolder(root).build("b")
    (root / "b" / "model-settings.json").write_text(json.dumps({"parameters": {"uri": "s3://x/y"}}))
    with pytest.raises(errors.ModelLoadError, match="storage"):
        ModelFolder(root).build("b")


def test_evicted_models_reload_on_request_and_alternating_load_loses_nothing(
    serve: StartServer, repo: Path
) -> None:
    folder = ModelFolder(repo)
    repository = ModelRepository(folder.build, folder.names, max_loaded_models=1)
    repository.load("one")
    for name in ("three", "two"):
        repository.defer(name)
    running = serve([], repository)
    answers = {"one": 1, "two": 2, "three": 3}
    failures: list[str] = []

    def hammer(names: list[str]) -> None:
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            for i in range(15):
                name = names[i % len(names)]
                try:
                    got = _infer(client, name)
                except AssertionError as exc:
                    failures.append(str(exc))
                    continue
                if got != answers[name]:
                    failures.append(f"{name} answered {got}")

    threads = [
        threading.Thread(target=hammer, args=([*["one", "two", "three"][i % 3 :], "one"],))
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert len(repository.get_models()) == 1
    with httpx.Client(base_url=running.http_url) as client:
        index = client.post("/v2/repository/index", json={}).json()
        states = {entry["name"]: entry["state"] for entry in index}
        assert sorted(states) == ["one", "three", "two"]
        assert sorted(states.values()) == ["READY", "UNAVAILABLE", "UNAVAILABLE"]
        evicted = next(e for e in index if e["state"] == "UNAVAILABLE")
        # Metadata of an evicted model loads it, as a request does.
        metadata = client.get(f"/v2/models/{evicted['name']}")
        assert metadata.status_code == 200
        assert metadata.json()["inputs"] == [
            {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
        ]
        assert client.get(f"/v2/models/{evicted['name']}/ready").status_code == 200


def test_unloading_one_model_while_another_is_under_load_loses_no_request(
    serve: StartServer, repo: Path
) -> None:
    folder = ModelFolder(repo)
    repository = ModelRepository(folder.build, folder.names)
    for name in folder.names():
        repository.load(name)
    running = serve([], repository)
    stop = threading.Event()
    results: list[Any] = []

    def load_on_one() -> None:
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            while not stop.is_set():
                try:
                    results.append(_infer(client, "one"))
                except AssertionError as exc:
                    results.append(str(exc))

    threads = [threading.Thread(target=load_on_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=running.http_url, timeout=30) as admin:
        for _ in range(5):
            assert admin.post("/v2/repository/models/two/unload").status_code == 200
            # Unloaded means gone, as in KServe: 404 until it is loaded again.
            assert admin.get("/v2/models/two/ready").status_code == 404
            assert admin.post("/v2/repository/models/two/load").status_code == 200
            assert _infer(admin, "two") == 2
            # A reload of the busy model itself swaps instances without failing a request.
            assert admin.post("/v2/repository/models/one/load").status_code == 200
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(results) > 20
    assert set(results) == {1}


def test_serve_a_repository_folder_from_the_command_line(repo: Path, tmp_path: Path) -> None:
    server = ServeProcess(serve_command(str(repo), "--max-loaded-models", "2"), cwd=tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # Listed at once; loaded in the background, in order, up to the budget.
            index = {e["name"]: e for e in client.post("/v2/repository/index", json={}).json()}
            assert sorted(index) == ["one", "three", "two"]
            assert client.get("/v2/health/ready").status_code == 200
            deadline = time.monotonic() + 30
            states: list[str] = []
            while time.monotonic() < deadline:
                entries = client.post("/v2/repository/index", json={}).json()
                states = [e["state"] for e in sorted(entries, key=lambda e: e["name"])]
                if states.count("READY") == 2:
                    break
                time.sleep(0.05)  # polling the background loader, not waiting out a race
            assert states == ["READY", "READY", "UNAVAILABLE"]
            assert _infer(client, "two") == 2  # past the budget at start: loads on request
            assert _infer(client, "one") == 1
            assert _infer(client, "three") == 3
            predicted = client.post("/v1/models/two:predict", json={"instances": ROW})
            assert predicted.json() == {"predictions": [2]}
    finally:
        assert server.stop() == 0
