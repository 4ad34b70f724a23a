"""The `access` scenario of bench/run.py: what bearer tokens and TLS cost modelhost.

One iris server (as the `iris` scenario serves it), started five ways, one at a time:

    modelhost               --auth none                          v1, v2, gRPC
    modelhost-tokens        --auth tokens --token_file F          v1, v2, gRPC
    modelhost-batch         --auth none   --max_batch_size 64     v1, v2
    modelhost-batch-tokens  --auth tokens --max_batch_size 64     v1, v2
    modelhost-tls           --auth none   --ssl_certfile/keyfile  v2 (https), gRPC (TLS, h2)

at 8 and 64 connections. With tokens every request carries `Authorization: Bearer` (wrk
and h2load `-H`), and the checks before and after each load also see a request without
the token refused. report.py puts tokens / none (target >= 0.95) and TLS / clear text
side by side. The token (`modelhost token create --role caller`) and a self-signed
certificate for 127.0.0.1 are made afresh under $PEERS/run/access at each run.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CONNS = [8, 64]


@dataclass(frozen=True)
class Variant:
    name: str
    protos: str  # the loads, as run.py names them
    batch: bool = False
    tokens: bool = False
    tls: bool = False


VARIANTS = [
    Variant("modelhost", "v1 v2 grpc"),
    Variant("modelhost-tokens", "v1 v2 grpc", tokens=True),
    Variant("modelhost-batch", "v1 v2", batch=True),
    Variant("modelhost-batch-tokens", "v1 v2", batch=True, tokens=True),
    Variant("modelhost-tls", "v2 grpc", tls=True),
]


@dataclass(frozen=True)
class Material:
    """What the variants need from disk: the token file and its token, the certificate."""

    token: str
    token_file: Path
    certfile: Path
    keyfile: Path


def prepare(workdir: Path, modelhost: str) -> Material:
    """A fresh caller token and a self-signed certificate for 127.0.0.1 under workdir."""
    shutil.rmtree(workdir, ignore_errors=True)
    home = workdir / "home"
    home.mkdir(parents=True)
    created = subprocess.run(
        [modelhost, "token", "create", "--role", "caller", "--name", "bench", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = created.stdout.strip().splitlines()[0].strip()
    certfile, keyfile = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(keyfile),
            "-out",
            str(certfile),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return Material(token, home / "tokens.db", certfile, keyfile)


def scheme(variant: Variant) -> str:
    return "https" if variant.tls else "http"


def serve_flags(variant: Variant, material: Material) -> list[str]:
    """The `modelhost serve` flags of one variant (after the model and --name)."""
    flags = ["--max_batch_size", "64"] if variant.batch else []
    if variant.tokens:
        flags += ["--auth", "tokens", "--token_file", str(material.token_file)]
    else:
        flags += ["--auth", "none"]
    if variant.tls:
        flags += ["--ssl_certfile", str(material.certfile), "--ssl_keyfile", str(material.keyfile)]
    return flags
