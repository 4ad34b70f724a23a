"""Real storage servers on loopback for the storage tests: S3 (moto), GCS, Azurite, HTTP.

Each starter binds port 0 (the kernel picks) and returns a handle whose ``stop`` frees
it. The S3 and HTTP servers record every request they answer, so tests can count the
downloads a cache hit did not make, and the S3 one can slow object reads down, so that
two processes surely overlap or one can be killed mid-download.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from modelhost.settings import StorageSettings

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".tools" / "node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's fixed development account (documented, public).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# A small model folder with a sub-folder, bytes that differ per file.
MODEL_FILES: dict[str, bytes] = {
    "model.joblib": bytes(range(256)) * 40,
    "config.json": b'{"name": "tiny", "labels": [0, 1]}',
    "sub/weights.bin": bytes(reversed(range(256))) * 12,
    "sub/deeper/vocab.txt": b"alpha\nbeta\ngamma\n",
}


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its '/'-separated relative path."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def storage_settings(tmp_path: Path, environ: Mapping[str, str]) -> StorageSettings:
    return StorageSettings(
        cache_dir=str(tmp_path / "cache"),
        pvc_root=str(tmp_path / "pvc"),
        progress=False,
        environ=dict(environ),
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- S3: moto's WSGI app behind a recording middleware -------------------------------


@dataclasses.dataclass
class S3Server:
    endpoint: str
    requests: list[Request]
    stop: Callable[[], None]
    # Seconds each object GET waits before answering (0: none); ``wake`` ends the waits.
    get_delay: float = 0.0
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)

    def slow_reads(self, seconds: float) -> None:
        self.wake.clear()
        self.get_delay = seconds

    def fast_reads(self) -> None:
        self.get_delay = 0.0
        self.wake.set()

    def env(self, **extra: str) -> dict[str, str]:
        """The storage environment of a client with (moto's accepted) test keys."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "S3_MAX_ATTEMPTS": "1",
            **extra,
        }

    def client(self, service: str = "s3") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def object_gets(self, bucket: str) -> list[str]:
        """The object keys of ``bucket`` read so far (listings excluded)."""
        prefix = f"/{bucket}/"
        return [
            r.path[len(prefix) :]
            for r in list(self.requests)
            if r.method == "GET" and r.path.startswith(prefix) and "list-type" not in r.query
        ]

    def upload(
        self, bucket: str, files: Mapping[str, bytes], prefix: str = "", acl: str = "private"
    ) -> None:
        client = self.client()
        for name, data in files.items():
            client.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=data, ACL=acl)


def start_s3() -> S3Server:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    requests: list[Request] = []
    holder: list[S3Server] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        headers = {
            k[5:].replace("_", "-").lower(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        request = Request(
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
            environ.get("QUERY_STRING", ""),
            headers,
        )
        requests.append(request)
        is_object_get = (
            request.method == "GET"
            and request.path.count("/") >= 2
            and "list-type" not in request.query
        )
        if is_object_get and holder and holder[0].get_delay:
            holder[0].wake.wait(holder[0].get_delay)
        result: Iterable[bytes] = app(environ, start_response)
        return result

    server = make_server(
        "127.0.0.1", 0, recording, threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="moto-s3", daemon=True
    )
    thread.start()

    def stop() -> None:
        if holder:
            holder[0].fast_reads()
        server.shutdown()
        server.server_close()
        thread.join(5)

    handle = S3Server(f"http://127.0.0.1:{server.server_port}", requests, stop)
    holder.append(handle)
    return handle


# --- GCS: gcp-storage-emulator, in memory ---------------------------------------------


@dataclasses.dataclass
class GcsServer:
    endpoint: str
    stop: Callable[[], None]

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def upload(self, bucket: str, files: Mapping[str, bytes], prefix: str = "") -> None:
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(token="anon", endpoint_url=self.endpoint, skip_instance_cache=True)
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.pipe({f"{bucket}/{prefix}{name}": data for name, data in files.items()})


def start_gcs() -> GcsServer:
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    # The emulator binds port 0 as asked but has no public accessor for the port it got.
    port = server._api._httpd.server_address[1]
    return GcsServer(f"http://127.0.0.1:{port}", server.stop)


# --- Azure: Azurite's blob service, a node process ------------------------------------


@dataclasses.dataclass
class AzureServer:
    blob_endpoint: str
    stop: Callable[[], None]

    def connection_string(self, key: str = AZURITE_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def upload(self, container: str, files: Mapping[str, bytes], prefix: str = "") -> None:
        from azure.storage.blob import ContainerClient

        with ContainerClient.from_connection_string(self.connection_string(), container) as client:
            if not client.exists():
                client.create_container()
            for name, data in files.items():
                client.upload_blob(f"{prefix}{name}", data, overwrite=True)


def azurite_missing() -> str | None:
    """Why Azurite cannot run here, or None."""
    if not AZURITE.exists():
        return f"Azurite is not installed at {AZURITE} (run scripts/install_test_services.sh)"
    if shutil.which("node") is None:
        return "node is not installed (Azurite needs it)"
    return None


def start_azurite(workdir: Path) -> AzureServer:
    process = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    port = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
        if match:
            port = int(match.group(1))
            break
    if port is None:
        process.kill()
        process.wait()
        raise RuntimeError("Azurite did not start:\n" + "".join(lines))
    # Drain its output so a full pipe never blocks it.
    threading.Thread(target=process.stdout.read, name="azurite-output", daemon=True).start()

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    return AzureServer(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", stop)


# --- HTTP: a static file server with a forbidden corner ---------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; paths under /forbidden/ answer 403."""

    def __init__(self, *args: Any, requests: list[Request], **kwargs: Any) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> bool:
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._requests.append(Request(self.command, path, query, headers))
        if path.startswith("/forbidden/"):
            self.send_error(403, "Forbidden")
            return False
        return True

    def do_GET(self) -> None:
        if self._record():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._record():
            super().do_HEAD()


@dataclasses.dataclass
class HttpServer:
    url: str
    root: Path
    requests: list[Request]
    stop: Callable[[], None]

    def gets(self, path: str) -> int:
        return sum(1 for r in list(self.requests) if r.method == "GET" and r.path == path)


def start_http(root: Path) -> HttpServer:
    requests: list[Request] = []
    handler = functools.partial(_Handler, requests=requests, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="http-files", daemon=True
    )
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return HttpServer(f"http://127.0.0.1:{server.server_port}", root, requests, stop)
