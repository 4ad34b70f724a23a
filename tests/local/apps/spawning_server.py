"""A custom server that spawns a helper process, as a real one may (a tokenizer, a worker).

The platform's crash tests run it as a replica: it answers every GET with 200 on
``--http_port``, and starts a child that listens on a port of its own and writes
``<its pid>`` holding that port into the folder ``$SPAWNED_DIR``. The child stays in the
replica's session, with its environment, and does not die with the replica: what is left of
a replica when only the replica itself is killed.

    SPAWNED_DIR=/tmp/x python tests/local/apps/spawning_server.py --http_port 8080
"""

from __future__ import annotations

import argparse
import http.server
import os
import subprocess
import sys

CHILD = """
import os, pathlib, socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
port = sock.getsockname()[1]
target = pathlib.Path(sys.argv[1]) / str(os.getpid())
target.with_suffix(".tmp").write_text(str(port))
target.with_suffix(".tmp").rename(target)
while True:
    sock.accept()[0].close()
"""


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, required=True)
    args, _ = parser.parse_known_args()
    subprocess.Popen([sys.executable, "-c", CHILD, os.environ["SPAWNED_DIR"]])
    http.server.ThreadingHTTPServer(("127.0.0.1", args.http_port), Ok).serve_forever()


if __name__ == "__main__":
    main()
