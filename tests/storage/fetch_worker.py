"""One ``download`` in a process of its own, for the cache's cross-process tests.

Usage: ``python fetch_worker.py <settings.json> <uri> [<ready-file> <go-file>]``.
Prints the path ``download`` returned. Given the two files, it loads everything, creates
the ready file, then waits for the go file, so that workers start fetching together.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import s3fs  # noqa: F401  (loaded before the start line: workers race on the fetch, not imports)

from modelhost.settings import StorageSettings
from modelhost.storage import download


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    settings = StorageSettings(
        cache_dir=config["cache_dir"], progress=False, environ=config["environ"]
    )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if len(sys.argv) > 3:
        Path(sys.argv[3]).touch()
        go = Path(sys.argv[4])
        while not go.exists():
            time.sleep(0.005)
    print(download(sys.argv[2], settings), flush=True)


if __name__ == "__main__":
    main()
