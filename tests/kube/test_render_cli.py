"""``modelhost render`` and ``modelhost fetch`` as a user runs them.

``render`` runs in-process through ``modelhost.cli.main`` (and once as a subprocess, to see
the bytes do not depend on the interpreter's hash seed). ``fetch`` downloads from a real
HTTP server on a loopback port the kernel picks.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from render_support import SAMPLES, sample

from modelhost.cli import main


def _render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["render", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_render_prints_every_object_as_yaml_documents(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _render(capsys, "-f", str(sample("torch-transformer.yaml")))
    assert code == 0
    documents = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in documents].count("Deployment") == 2
    assert {d["metadata"]["namespace"] for d in documents} == {"default"}


def test_json_output_is_a_kubernetes_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _render(capsys, "-f", str(sample("sklearn-iris-v1.yaml")), "-o", "json")
    assert code == 0
    document = json.loads(out)
    assert (document["apiVersion"], document["kind"]) == ("v1", "List")
    assert "Deployment" in {item["kind"] for item in document["items"]}


def test_the_files_runtimes_come_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _render(capsys, "-f", str(sample("runtime-and-service.yaml")))
    assert code == 0
    (deployment,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment"]
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["image"] == "kserve/sklearnserver:latest"


def test_namespace_and_gateway_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _render(
        capsys,
        "-f",
        str(sample("sklearn-iris-v1.yaml")),
        "--namespace",
        "models",
        "--gateway",
        "infra/public",
        "--domain",
        "ml.example.org",
    )
    assert code == 0
    documents = list(yaml.safe_load_all(out))
    assert {d["metadata"]["namespace"] for d in documents} == {"models"}
    (route, *_) = [d for d in documents if d["kind"] == "HTTPRoute"]
    assert route["spec"]["parentRefs"][0]["namespace"] == "infra"
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    assert route["spec"]["hostnames"] == ["sklearn-iris.models.ml.example.org"]


def test_a_namespace_that_contradicts_the_file_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _render(capsys, "-f", str(sample("canary.yaml")), "-n", "other")
    assert code == 1
    assert out == ""
    assert "metadata.namespace" in err
    assert "kserve-test" in err


def test_a_model_without_a_modelhost_runtime_fails_naming_the_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _render(capsys, "-f", str(SAMPLES / "tensorflow.yaml"))
    assert code == 1
    assert out == ""
    assert err.startswith("modelhost render: InferenceService default/flower-sample is invalid")
    assert "spec.predictor.model.modelFormat" in err
    assert "tensorflow" in err


def test_a_storage_spec_reads_the_secret_the_flag_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(SAMPLES / "storage-spec.yaml")
    for flags, secret in (((), "storage-config"), (("--storage-secret", "team-a"), "team-a")):
        code, out, _ = _render(capsys, "-f", path, *flags)
        assert code == 0
        (deployment,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment"]
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["env"][0]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "localMinIO"}


def test_a_bad_gateway_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _render(capsys, "-f", str(sample("sklearn-iris-v1.yaml")), "--gateway", "x")
    assert code == 1
    assert "NAMESPACE/NAME" in err


def test_the_bytes_do_not_depend_on_the_hash_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code, expected, _ = _render(capsys, "-f", str(sample("art-explainer.yaml")))
    assert code == 0
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "render", "-f", str(sample("art-explainer.yaml"))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout == expected


# -- fetch -------------------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback (a port the kernel picks)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fetch_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user cache: fetch must work from its own scratch space, as in a pod."""
    monkeypatch.setenv("MODELHOST_CACHE_DIR", str(tmp_path / "unused-cache"))


@pytest.mark.usefixtures("fetch_env")
def test_fetch_puts_a_downloaded_archive_into_the_folder(
    http_root: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = http_root
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in (("model.joblib", "weights"), ("sub/config.json", "{}")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (root / "model.tar.gz").write_bytes(buffer.getvalue())
    dest = tmp_path / "mnt" / "models"
    assert main(["fetch", f"{url}/model.tar.gz", str(dest)]) == 0
    assert (dest / "model.joblib").read_text() == "weights"
    assert (dest / "sub" / "config.json").read_text() == "{}"
    # Nothing else is left: the scratch cache is gone.
    assert sorted(p.name for p in dest.iterdir()) == ["model.joblib", "sub"]
    assert not (tmp_path / "unused-cache").exists()
    # A restarted init container fetches into the same emptyDir again.
    (root / "model.tar.gz").write_bytes(buffer.getvalue())
    assert main(["fetch", f"{url}/model.tar.gz", str(dest)]) == 0
    assert (dest / "model.joblib").read_text() == "weights"
    capsys.readouterr()


@pytest.mark.usefixtures("fetch_env")
def test_fetch_copies_a_local_folder(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "model.bst").write_text("trees")
    dest = tmp_path / "dest"
    assert main(["fetch", f"file://{source}", str(dest)]) == 0
    assert (dest / "model.bst").read_text() == "trees"
    assert (source / "model.bst").exists()  # a local source is copied, not moved


@pytest.mark.usefixtures("fetch_env")
def test_fetch_reports_a_missing_model(
    http_root: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = http_root
    code = main(["fetch", f"{url}/missing.joblib", str(tmp_path / "dest")])
    assert code == 1
    assert "modelhost fetch:" in capsys.readouterr().err
