"""The tabular image as a cluster runs it: built here, started with KServe's arguments, answering.

``scripts/build_images.sh tabular`` builds ``modelhost/modelhost-tabular:<version>`` (and keeps
the image as it is when nothing it is built from changed: .ci/run's image step builds it just
before this runs). ``buildah run --isolation chroot`` starts it on an iris model bound at
/mnt/models (``podman run`` cannot set rlimits on these machines). The chroot shares the host's
network, so the clients here reach the server on loopback; it binds port 0 rather than KServe's
8080/8081, as every test here does on a shared machine, and the test reads the ports from its
ready line.

Marked ``image``, which pytest's addopts deselect: it needs root, buildah and mmdebstrap and
builds for minutes from cold, so the main run leaves it to .ci/run's image step
(``pytest -m image tests/deploy``). It skips with the reason where a tool is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from serving import READY_LINE

from modelhost._version import __version__

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build_images.sh"
IMAGE = f"modelhost/modelhost-tabular:{__version__}"
# What KServe gives a runtime, on ports the kernel picks (--host keeps them on loopback).
KSERVE_ARGS = (
    "--model_name=iris",
    "--model_dir=/mnt/models",
    "--http_port=0",
    "--grpc_port=0",
    "--host=127.0.0.1",
)
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4], [6.7, 3.0, 5.2, 2.3]]
# Run inside the image: the native libraries load (libgomp is the base's) and XGBoost, from the
# CPU-only wheel, and LightGBM train and predict.
NATIVE_RUNTIMES_SCRIPT = """
import json
import lightgbm, numpy, onnxruntime, sklearn, xgboost
x = numpy.arange(80, dtype=numpy.float64).reshape(40, 2)
y = (x[:, 0] > 40).astype(int)
booster = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, y), 5)
gbm = lightgbm.LGBMClassifier(n_estimators=5, min_child_samples=2, verbose=-1).fit(x, y)
print(json.dumps({
    "xgboost": (booster.predict(xgboost.DMatrix(x[[0, -1]])) > 0.5).astype(int).tolist(),
    "lightgbm": gbm.predict(x[[0, -1]]).tolist(),
    "onnxruntime": onnxruntime.get_available_providers(),
}))
"""


@pytest.fixture(scope="module")
def buildah() -> list[str]:
    """``buildah`` with the build script's storage options."""
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed "
            "(as root: bash scripts/install_test_services.sh installs both)"
        )
    if os.geteuid() != 0:
        pytest.skip("buildah's chroot isolation and mmdebstrap's root mode need root")
    storage = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "storage"], capture_output=True, text=True, check=True
    )
    return ["buildah", *storage.stdout.split()]


@pytest.fixture(scope="module")
def tabular_image(buildah: list[str]) -> str:
    build = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "tabular"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1500,
    )
    if build.returncode != 0:
        pytest.fail(f"build_images.sh tabular failed:\n{build.stdout[-6000:]}")
    return IMAGE


@pytest.fixture(scope="module")
def image_config(buildah: list[str], tabular_image: str) -> dict[str, Any]:
    inspect = subprocess.run(
        [*buildah, "inspect", "--type", "image", tabular_image],
        capture_output=True,
        text=True,
        check=True,
    )
    config: dict[str, Any] = json.loads(inspect.stdout)["OCIv1"]["config"]
    return config


@pytest.fixture(scope="module")
def container(buildah: list[str], tabular_image: str) -> Iterator[str]:
    """A working container of the image; ``buildah run`` starts processes in it."""
    name = f"modelhost-image-test-{uuid.uuid4().hex[:12]}"
    subprocess.run(
        [*buildah, "from", "--pull-never", "--quiet", "--name", name, tabular_image],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    yield name
    subprocess.run([*buildah, "rm", name], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("models") / "iris"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_iris_model.py"), str(target)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # The server in the image runs as uid 1000.
    target.chmod(0o755)
    (target / "model.joblib").chmod(0o644)
    return target


@pytest.fixture(scope="module")
def expected(iris_dir: Path) -> list[int]:
    predictions = joblib.load(iris_dir / "model.joblib").predict(np.array(ROWS))
    return [int(label) for label in predictions]


class ContainerServer:
    """``buildah run`` of one command in the container, in a process group of its own."""

    def __init__(self, buildah: list[str], container: str, model_dir: Path, argv: list[str]):
        self.process = subprocess.Popen(
            [
                *buildah,
                "run",
                "--isolation",
                "chroot",
                "--volume",
                f"{model_dir}:/mnt/models:ro",
                container,
                "--",
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.http_port = 0
        self.grpc_port = 0
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                match = READY_LINE.search(line)
                if match and not ready.is_set():
                    self.http_port = int(match.group(1))
                    self.grpc_port = int(match.group(2) or 0)
                    ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(120):
            self.stop()
            raise AssertionError("the image's server did not start:\n" + "".join(self.lines))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        """Ends buildah and everything it started (buildah kills its child on SIGTERM)."""
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
            self.process.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(30)
        # Whatever is left in the session (none when buildah cleaned up after itself).
        for pid in _session_members(group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _session_members(session: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session:
            members.append(int(entry.name))
    return members


def _server_uids(session: int) -> set[int]:
    """The real uids of the image's Python processes in ``session``."""
    uids = set()
    for pid in _session_members(session):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if argv[0] == b"/opt/modelhost/bin/python":
            (uid_line,) = (line for line in status.splitlines() if line.startswith("Uid:"))
            uids.add(int(uid_line.split()[1]))
    return uids


def _port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def serve_in_container(
    buildah: list[str], container: str, iris_dir: Path
) -> Iterator[Callable[[list[str]], ContainerServer]]:
    """Start ``argv`` in the container on the iris model; each one is stopped after the test."""
    started: list[ContainerServer] = []

    def start(argv: list[str]) -> ContainerServer:
        server = ContainerServer(buildah, container, iris_dir, argv)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        assert _port_is_closed(server.http_port), "the image's server outlived the test"
        assert _port_is_closed(server.grpc_port), "the image's server outlived the test"


def test_image_runs_as_kserve_expects(image_config: dict[str, Any]) -> None:
    assert image_config["User"] == "1000:1000"
    assert image_config["WorkingDir"] == "/home/modelhost"
    assert image_config["Entrypoint"] == ["modelhost-entrypoint"]
    assert image_config["Cmd"] == ["serve"]
    assert set(image_config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    assert image_config["Labels"]["org.opencontainers.image.version"] == __version__


def test_image_holds_no_build_tools(buildah: list[str], container: str) -> None:
    mount = subprocess.run(
        [*buildah, "mount", container], capture_output=True, text=True, check=True
    )
    root = Path(mount.stdout.strip())
    try:
        site_packages = root / "opt/modelhost/lib/python3.11/site-packages"
        assert (site_packages / "modelhost").is_dir()
        assert not list(site_packages.glob("pip")) + list(site_packages.glob("pip-*"))
        for tool in ("opt/modelhost/bin/pip", "usr/bin/pip3", "usr/bin/gcc", "usr/bin/cc"):
            assert not (root / tool).exists(), tool
        # Debian's python3-venv would bring pip's wheel; the base leaves it out.
        assert not (root / "usr/share/python-wheels").exists()
        assert not (root / "root/.cache").exists()
        lists = root / "var/lib/apt/lists"
        assert {entry.name for entry in lists.iterdir()} <= {"lock", "partial", "auxfiles"}
        assert not list((root / "var/cache/apt").glob("*.bin"))
        assert (root / "mnt/models").is_dir()
        assert "modelhost:x:1000:1000:" in (root / "etc/passwd").read_text()
    finally:
        subprocess.run([*buildah, "umount", container], check=True, stdout=subprocess.DEVNULL)


def test_native_runtimes_load_and_predict(buildah: list[str], container: str) -> None:
    command = ["python3", "-c", NATIVE_RUNTIMES_SCRIPT]
    run = subprocess.run(
        [*buildah, "run", "--isolation", "chroot", container, "--", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["xgboost"] == [0, 1]
    assert facts["lightgbm"] == [0, 1]
    assert "CPUExecutionProvider" in facts["onnxruntime"]


def test_kserve_args_after_the_entrypoint_serve_v1_v2_and_grpc(
    serve_in_container: Callable[[list[str]], ContainerServer],
    image_config: dict[str, Any],
    expected: list[int],
) -> None:
    # Kubernetes puts a container's args after the image's entrypoint, in place of its CMD.
    server = serve_in_container([*image_config["Entrypoint"], *KSERVE_ARGS])
    assert _server_uids(server.process.pid) == {1000}
    v1 = httpx.post(f"{server.url}/v1/models/iris:predict", json={"instances": ROWS})
    assert v1.status_code == 200, v1.text
    assert v1.json() == {"predictions": expected}
    tensor = {"name": "input-0", "shape": [len(ROWS), 4], "datatype": "FP64", "data": ROWS}
    v2 = httpx.post(f"{server.url}/v2/models/iris/infer", json={"inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == expected
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        assert client.is_model_ready("iris")
        grpc_input = triton_grpc.InferInput("input-0", [len(ROWS), 4], "FP64")
        grpc_input.set_data_from_numpy(np.array(ROWS, dtype=np.float64))
        result = client.infer("iris", [grpc_input])
        assert result.as_numpy("output-0").tolist() == expected
    finally:
        client.close()


def test_kserve_command_modelhost_serve(
    serve_in_container: Callable[[list[str]], ContainerServer], expected: list[int]
) -> None:
    # A ServingRuntime that sets `command: [modelhost, serve]` bypasses the entrypoint.
    server = serve_in_container(["modelhost", "serve", *KSERVE_ARGS])
    ready = httpx.get(f"{server.url}/v2/models/iris/ready")
    assert ready.status_code == 200
    v1 = httpx.post(f"{server.url}/v1/models/iris:predict", json={"instances": ROWS})
    assert v1.json() == {"predictions": expected}
