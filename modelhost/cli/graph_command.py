"""``modelhost graph``: run one InferenceGraph's router, the process behind a graph's URL.

The platform starts it as a graph's replica and the Kubernetes renderer as the router
Deployment's container, both with ``--spec`` holding the router config
(:mod:`modelhost.graph.config`): the graph and where each of its InferenceServices is.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost.settings import Http1Limits

if TYPE_CHECKING:
    from modelhost.graph.server import GraphServerSettings

__all__ = ["COMMAND", "add_command", "graph_settings", "run"]

COMMAND = "graph"
# Where the platform says which address its replicas listen on.
HOST_VARIABLE = "MODELHOST_HOST"


def add_command(commands: Any) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="run an InferenceGraph's router (Sequence, Switch, Ensemble, Splitter)",
        description=(
            "Serve one InferenceGraph over HTTP at / (as KServe's router), "
            "/v1/models/<graph>:predict and /v2/models/<graph>/infer, calling its steps' "
            "InferenceServices directly or through a gateway. The router config (--spec) holds "
            "the graph and, for each service its steps name, its ingress host, in-cluster "
            "address, protocols and model name."
        ),
    )
    parser.add_argument(
        "--spec",
        required=True,
        help="the router config: inline JSON (starting with '{') or a JSON or YAML file",
    )
    parser.add_argument(
        "--http-port", type=_port, default=8080, help="HTTP port (8080; 0: any free port)"
    )
    parser.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default: ${HOST_VARIABLE}, else 0.0.0.0)",
    )
    parser.add_argument(
        "--gateway",
        default=None,
        metavar="HOST:PORT",
        help="send every serviceName step here with the service's host in Host "
        "(default: none, steps go to each service's address)",
    )
    parser.add_argument(
        "--propagate-header",
        dest="propagate_headers",
        action="append",
        default=[],
        metavar="REGEX",
        help="pass request headers whose names match to every step (repeatable; KServe's "
        "router headers.propagate)",
    )
    parser.add_argument(
        "--step-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="bound on a step call when the graph sets no routerTimeouts.serviceClient "
        "(default: none, as KServe)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=Http1Limits.max_body_bytes,
        metavar="N",
        help=f"largest request body, 413 past it ({Http1Limits.max_body_bytes})",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    parser.set_defaults(handler=run)


def graph_settings(args: argparse.Namespace) -> GraphServerSettings:
    """The router process's settings from the command line and ``MODELHOST_HOST``."""
    # The router's modules load when it runs: every other command builds this parser too.
    from modelhost.graph.router import RouterSettings
    from modelhost.graph.server import GraphServerSettings

    gateway = (args.gateway or "").strip() or None
    if gateway is not None and ("/" in gateway or any(c.isspace() for c in gateway)):
        raise errors.InvalidInput(f"--gateway takes HOST:PORT, not {args.gateway!r}")
    for pattern in args.propagate_headers:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise errors.InvalidInput(
                f"--propagate-header {pattern!r} is not a regular expression: {exc}"
            ) from None
    host = args.host or os.environ.get(HOST_VARIABLE) or "0.0.0.0"
    return GraphServerSettings(
        host=host,
        http_port=args.http_port,
        gateway=gateway,
        router=RouterSettings(
            propagate_headers=tuple(args.propagate_headers),
            default_step_timeout=args.step_timeout,
        ),
        max_body_bytes=args.max_body_bytes,
    )


def run(args: argparse.Namespace) -> int:
    from modelhost.graph.config import load_router_config
    from modelhost.graph.server import GraphServer, run_graph_server
    from modelhost.server.model_server import configure_logging

    configure_logging(args.log_level)
    try:
        settings = graph_settings(args)
        config = load_router_config(args.spec)
        server = GraphServer(config, settings)
    except errors.ModelhostError as exc:
        print(f"modelhost {COMMAND}: {exc}", file=sys.stderr)
        return 2
    try:
        _run(run_graph_server(server))
    except OSError as exc:
        print(f"modelhost {COMMAND}: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        asyncio.run(main)
    else:
        uvloop.run(main)


def _port(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {raw!r}")
    return value


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {raw!r}")
    return value
