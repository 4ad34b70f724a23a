"""The ``modelhost`` command: ``modelhost serve ./model_dir`` and friends."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost._version import __version__
from modelhost.cli import (
    graph_command,
    kube_commands,
    operator_command,
    platform_commands,
    registry_commands,
    runtime_commands,
    serve_trust,
    trust_commands,
)
from modelhost.runtimes.names import RUNTIME_NAMES
from modelhost.settings import (
    StorageSettings,
    add_server_arguments,
    settings_from_args,
)

if TYPE_CHECKING:
    from modelhost.server.extensions import ServerExtensions

# Every command builds the whole parser, so this module and the command modules import
# only what the parser needs; a command imports the rest when it runs (``serve`` is ready
# sooner, ``apply`` and ``get`` pay for no server).

__all__ = ["build_parser", "main", "runtime_options"]

logger = logging.getLogger("modelhost.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelhost", description="Serve machine learning models (KServe-compatible)."
    )
    parser.add_argument("--version", action="version", version=f"modelhost {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a model (folder, file or storage URI) or a model repository folder",
        description=(
            "Serve models over the Open Inference Protocol (v1, v2 REST, gRPC): one model "
            "(a folder, a file, or a storageUri such as s3://bucket/model, gs://, hf://, "
            "oci://), or a model repository folder with one sub-folder per model."
        ),
    )
    serve.add_argument(
        "model_dir", nargs="?", help="model folder, file, storage URI, or repository folder"
    )
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
        "--model_format",
        "--model-format",
        dest="runtime",
        default=None,
        help=f"framework: {', '.join(RUNTIME_NAMES)} (default: detected from the files)",
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
        help="sklearn, catboost: return predict_proba",
    )
    _add_runtime_options(serve)
    add_server_arguments(serve)
    serve_trust.add_arguments(serve)
    plan_command = commands.add_parser(
        "plan",
        help="show what the platform would run for KServe YAML (a dry run)",
        description=(
            "Parse, default and validate the InferenceServices in a YAML file (KServe's own "
            "samples work unchanged), select their runtimes (the file's ServingRuntimes, "
            "then the built-in ones) and print the plan: components, revisions, processes, "
            "scaling, routes and traffic. Nothing is started."
        ),
    )
    plan_command.add_argument("-f", "--filename", required=True, help="YAML or JSON file")
    plan_command.add_argument(
        "-o", "--output", choices=["yaml", "json"], default="yaml", help="output format"
    )
    platform_commands.add_commands(commands)
    runtime_commands.add_command(commands)
    kube_commands.add_commands(commands)
    operator_command.add_command(commands)
    graph_command.add_command(commands)
    trust_commands.add_command(commands)
    registry_commands.add_command(commands)
    return parser


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Runtime options (KServe's flag names where it has them); each runtime takes its own."""
    group = parser.add_argument_group("runtime options")
    group.add_argument(
        "--no-distil",
        "--no_distil",
        dest="no_distil",
        action="store_true",
        help="sklearn: predict with the estimator itself, not its distilled form (docs/models.md)",
    )
    group.add_argument("--task", default=None, help="huggingface: the task (detected)")
    group.add_argument(
        "--return_probabilities",
        "--return-probabilities",
        dest="return_probabilities",
        action="store_true",
        default=None,
        help="huggingface: return class probabilities",
    )
    group.add_argument(
        "--max_length",
        "--max-length",
        dest="max_length",
        type=int,
        default=None,
        help="huggingface: longest input in tokens",
    )
    group.add_argument(
        "--device", default=None, help="pytorch, huggingface: cpu, cuda or auto (cpu)"
    )
    group.add_argument(
        "--nthread", type=int, default=None, help="threads per predict for native runtimes (1)"
    )
    group.add_argument(
        "--dtype", default=None, help="huggingface, llm: auto, float32, float16 or bfloat16"
    )
    group.add_argument(
        "--backend",
        default=None,
        help="llm: auto, transformers or vllm (auto: vllm if installed and a GPU is visible)",
    )
    group.add_argument(
        "--max_num_seqs",
        "--max-num-seqs",
        dest="max_num_seqs",
        type=int,
        default=None,
        help="llm: requests generated together in the running batch (16)",
    )
    group.add_argument(
        "--max_model_len",
        "--max-model-len",
        dest="max_model_len",
        type=int,
        default=None,
        help="llm: context length in tokens, prompt and output (the model's)",
    )
    group.add_argument(
        "--lora",
        "--lora_modules",
        "--lora-modules",
        dest="lora",
        action="append",
        default=None,
        metavar="NAME=PATH",
        help="llm: serve the LoRA adapter in folder PATH as model NAME (repeatable)",
    )
    group.add_argument(
        "--option",
        dest="extra_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other runtime option (repeatable)",
    )


_OPTION_FLAGS = (
    *("predict_proba", "task", "return_probabilities", "max_length", "device", "nthread"),
    *("dtype", "backend", "max_num_seqs", "max_model_len", "lora"),
)


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime options the command line gives (flags not given are left out)."""
    options: dict[str, Any] = {}
    for raw in args.extra_options:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise errors.InvalidInput(f"--option takes KEY=VALUE, not {raw!r}.")
        options[key.strip()] = value
    for flag in _OPTION_FLAGS:
        value = getattr(args, flag, None)
        if value not in (None, False):
            options[flag] = value
    if getattr(args, "no_distil", False):
        options["distil"] = False
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "plan":
        return _plan(args)
    if args.command in platform_commands.COMMANDS:
        return platform_commands.run(args)
    handler = getattr(args, "handler", None)  # a command module's ``set_defaults(handler=)``
    if handler is not None:
        return int(handler(args))
    return 2  # pragma: no cover - argparse rejects unknown commands


def _extensions(args: argparse.Namespace) -> ServerExtensions:
    """What the serve flags plug into the server (``--trust``, ``--explainer``,
    ``--detectors``)."""
    from modelhost.server.extensions import ServerExtensions

    mount = serve_trust.trust_mount(args)
    settings = settings_from_args(args)
    explainer = None
    if settings.explainer or settings.explainer_background:  # the latter alone is an error
        from modelhost.trust.explainers.served import explainer_from_settings

        explainer = explainer_from_settings(settings.explainer, settings.explainer_background)
    guardrails = []
    if settings.detectors:
        from modelhost.trust.guardrails import detector_guardrails, load_detectors

        guardrails = detector_guardrails(load_detectors(Path(settings.detectors)))
    return ServerExtensions(
        explainer=explainer,
        guardrails=guardrails,
        mounts=(mount,) if mount is not None else (),
    )


def _serve(args: argparse.Namespace) -> int:
    from modelhost.runtimes import detect, model_folder
    from modelhost.server.model_server import ModelServer, configure_logging

    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    target = args.model_dir or args.model_dir_flag
    if target is None and args.model_class is None:
        print("modelhost serve: give a model directory (or --model-class)", file=sys.stderr)
        return 2
    if args.trust and settings.workers > 1:
        print("modelhost serve: --trust serves from one process; drop --workers", file=sys.stderr)
        return 2
    try:
        options = runtime_options(args)
        storage_settings = StorageSettings.from_env()
        options.setdefault("fast_start_dir", storage_settings.fast_start_dir)
        path = _local_path(target, storage_settings) if target else Path.cwd()
        if target and args.model_class is None and model_folder.is_model_repository(path):
            from modelhost.cli.serve_repository import serve_repository

            serve_repository(path, options, settings, storage_settings, _extensions(args))
            return 0
        name = args.name or _default_name(target, path)
        model = detect.build_model(
            path, name, runtime=args.runtime, model_class=args.model_class, options=options
        )
        ModelServer(settings=settings, extensions=_extensions(args)).start([model])
    except (errors.ModelhostError, OSError) as exc:
        print(f"modelhost serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _plan(args: argparse.Namespace) -> int:
    """Print the plan of every InferenceService in the file; 1 on the first invalid one."""
    import dataclasses
    import json

    import yaml

    from modelhost import control

    try:
        text = Path(args.filename).read_text()
        objects = control.parse_documents(text, source=args.filename)
        runtimes = [
            obj
            for obj in objects
            if isinstance(obj, (control.ServingRuntime, control.ClusterServingRuntime))
        ]
        plans = [
            dataclasses.asdict(control.plan(obj, [*runtimes, *control.builtin_runtimes()]))
            for obj in objects
            if isinstance(obj, control.InferenceService)
        ]
    except (errors.ModelhostError, OSError) as exc:
        print(f"modelhost plan: {exc}", file=sys.stderr)
        return 1
    # Through JSON so that tuples print as plain lists in both formats.
    plain = json.loads(json.dumps(plans, default=str))
    if args.output == "json":
        print(json.dumps(plain, indent=2))
    else:
        print(yaml.safe_dump_all(plain, sort_keys=False), end="")
    return 0


def _local_path(target: str, storage_settings: StorageSettings) -> Path:
    """The local folder or file for a path or a storageUri (fetched into the cache)."""
    if "://" in target:
        from modelhost import storage  # its cache's file locks: only for a storageUri

        return storage.download(target, storage_settings)
    return Path(target).expanduser()


def _default_name(target: str | None, path: Path) -> str:
    """The folder's (or file's) name, or the last part of a storageUri."""
    if target and "://" in target:
        last = target.rstrip("/").rsplit("/", 1)[-1]
        last = last.split("@", 1)[0].split(":", 1)[0]
        return Path(last).stem or path.name
    return path.stem if path.is_file() else path.resolve().name


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
