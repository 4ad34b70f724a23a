"""The ``modelhost`` command: ``modelhost serve ./model_dir`` and friends."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from modelhost import errors
from modelhost._version import __version__
from modelhost.runtimes import detect
from modelhost.server.model_server import ModelServer, configure_logging
from modelhost.settings import add_server_arguments, settings_from_args

__all__ = ["build_parser", "main"]

logger = logging.getLogger("modelhost.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelhost", description="Serve machine learning models (KServe-compatible)."
    )
    parser.add_argument("--version", action="version", version=f"modelhost {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a model directory over REST and gRPC",
        description="Serve one model over the Open Inference Protocol (v1, v2 REST, gRPC).",
    )
    serve.add_argument("model_dir", nargs="?", help="folder (or file) holding the model")
    serve.add_argument(
        "--model_dir", "--model-dir", dest="model_dir_flag", default=None, help=argparse.SUPPRESS
    )
    serve.add_argument(
        "--name",
        "--model_name",
        "--model-name",
        dest="name",
        default=None,
        help="model name in URLs (default: the folder's name)",
    )
    serve.add_argument(
        "--runtime",
        choices=detect.RUNTIMES,
        default=None,
        help="framework (default: detected from the files)",
    )
    serve.add_argument(
        "--model-class",
        "--model_class",
        dest="model_class",
        default=None,
        help="custom model as pkg.module:Class",
    )
    serve.add_argument(
        "--predict-proba",
        "--predict_proba",
        dest="predict_proba",
        action="store_true",
        help="sklearn: return predict_proba",
    )
    add_server_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    model_dir = args.model_dir or args.model_dir_flag
    if model_dir is None and args.model_class is None:
        print("modelhost serve: give a model directory (or --model-class)", file=sys.stderr)
        return 2
    path = Path(model_dir) if model_dir else Path.cwd()
    name = args.name or (path.stem if path.is_file() else path.resolve().name)
    options = {"predict_proba": True} if args.predict_proba else {}
    try:
        model = detect.build_model(
            path, name, runtime=args.runtime, model_class=args.model_class, options=options
        )
    except errors.ModelhostError as exc:
        print(f"modelhost serve: {exc}", file=sys.stderr)
        return 1
    try:
        ModelServer(settings=settings).start([model])
    except errors.ModelhostError as exc:
        print(f"modelhost serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"modelhost serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
