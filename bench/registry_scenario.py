"""What the model registry costs: listing 10,000 versions, and resolving ``model-registry://``.

1. **Listing.** One registered model with 10,000 versions (an SQLite file, as the platform
   keeps it), served by the registry's REST app under uvicorn on a loopback port. A client
   (plain ``http.client``, one kept connection) lists every version, page after page, at
   ``pageSize`` 100 and 1000, in id order and newest first. Target: all pages in ≤ 1 s.
2. **Resolving.** What a ``model-registry://`` storageUri adds to a model's load: resolving
   it to its artifact's URI (three REST calls, a fresh connection, as ``modelhost serve``
   does), for a named version and for "the newest LIVE version", 50 times each; and the same
   in-process, as the embedded platform's reconciler does. Target: median ≤ 20 ms.

    .venv/bin/python bench/registry_scenario.py        # VERSIONS=10000 RESOLVES=50

Results go to ``OUT/registry.md`` (default ``bench/results/<UTC time>-registry``).
"""

from __future__ import annotations

import functools
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_scenario import publish, results_folder

from modelhost.local.registry_deploy import ServiceLookup
from modelhost.registry import RegistryApp, RegistryService, RegistrySettings, RegistryStore
from modelhost.settings import StorageSettings
from modelhost.storage.model_registry import (
    RegistryRestClient,
    parse_reference,
    resolve_reference,
    resolve_uri,
)

MODEL = "bench-model"
VERSIONS = int(os.environ.get("VERSIONS", "10000"))
RESOLVES = int(os.environ.get("RESOLVES", "50"))


def seed(path: Path) -> None:
    """One model, VERSIONS versions, each with one model artifact."""
    store = RegistryStore(str(path))
    model = store.create("registered_model", 0, {"name": MODEL, "state": "LIVE"})
    for number in range(1, VERSIONS + 1):
        body = {"name": f"v{number}", "registeredModelId": str(model.id), "state": "LIVE"}
        version = store.create("model_version", model.id, body)
        artifact = {
            "name": MODEL,
            "artifactType": "model-artifact",
            "uri": f"s3://models/{MODEL}/v{number}",
            "modelFormatName": "sklearn",
            "state": "LIVE",
        }
        store.create("artifact", version.id, artifact)
    store.close()


@contextmanager
def serve(store: RegistryStore) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    app = RegistryApp(store, RegistrySettings())
    config = uvicorn.Config(app, lifespan="off", log_config=None, http="httptools")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def list_all(client: RegistryRestClient, path: str, size: int, order: dict[str, str]) -> int:
    params = {"pageSize": str(size), **order}
    seen = 0
    while True:
        page = client.get(path, params)
        seen += len(page["items"])
        if not page["nextPageToken"]:
            return seen
        params["nextPageToken"] = page["nextPageToken"]


def timed(call: Callable[[], Any], times: int) -> list[float]:
    timings = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings


def listing(url: str, model_id: str) -> list[str]:
    lines = [
        "| pageSize | order | pages | items | seconds (median of 3) | target ≤ 1 s |",
        "|---|---|---|---|---|---|",
    ]
    client = RegistryRestClient(url)
    path = f"/registered_models/{model_id}/versions"
    for size in (100, 1000):
        for label, order in (
            ("id", {}),
            ("newest first", {"orderBy": "CREATE_TIME", "sortOrder": "DESC"}),
        ):
            assert list_all(client, path, size, order) == VERSIONS
            timings = timed(functools.partial(list_all, client, path, size, order), 3)
            median = statistics.median(timings)
            pages = -(-VERSIONS // size)
            verdict = "met" if median <= 1.0 else "not met"
            lines.append(
                f"| {size} | {label} | {pages} | {VERSIONS:,} | {median:.3f} | {verdict} |"
            )
            print(f"list pageSize={size} {label}: {[round(t, 3) for t in timings]}", flush=True)
    client.close()
    return lines


def resolving(url: str, store: RegistryStore) -> list[str]:
    settings = StorageSettings(environ={"MODEL_REGISTRY_BASE_URL": url})
    lookup = ServiceLookup(RegistryService(store))
    middle = f"v{VERSIONS // 2}"
    cases = [
        ("REST", "named version", f"model-registry://{MODEL}/{middle}"),
        ("REST", "newest LIVE", f"model-registry://{MODEL}"),
        ("in-process", "named version", f"model-registry://{MODEL}/{middle}"),
        ("in-process", "newest LIVE", f"model-registry://{MODEL}"),
    ]
    lines = [
        "| path | reference | median ms | p90 ms | target ≤ 20 ms |",
        "|---|---|---|---|---|",
    ]
    for path, label, uri in cases:
        if path == "REST":

            def call(uri: str = uri) -> object:
                return resolve_uri(uri, settings)

        else:

            def call(uri: str = uri) -> object:
                return resolve_reference(parse_reference(uri), lookup)

        call()  # warm
        timings = timed(call, RESOLVES)
        median = statistics.median(timings) * 1000
        p90 = statistics.quantiles(timings, n=10)[-1] * 1000
        verdict = "met" if median <= 20 else "not met"
        lines.append(f"| {path} | {label} | {median:.2f} | {p90:.2f} | {verdict} |")
        print(f"resolve {path} {label}: median {median:.2f} ms", flush=True)
    return lines


def main() -> int:
    out_dir = results_folder("registry")
    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    database = work / "registry.sqlite"
    start = time.perf_counter()
    seed(database)
    print(f"seeded {VERSIONS:,} versions in {time.perf_counter() - start:.1f}s", flush=True)
    store = RegistryStore(str(database))
    model_id = str(store.find("registered_model", name=MODEL).id)  # type: ignore[union-attr]
    with serve(store) as port:
        url = f"http://127.0.0.1:{port}"
        sections = [f"## Listing {VERSIONS:,} versions of one model (REST, loopback)\n"]
        sections += listing(url, model_id)
        sections += ["", f"## Resolving model-registry:// ({RESOLVES} times each)\n"]
        sections += resolving(url, store)
    store.close()
    publish(out_dir, "registry.md", "\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
