"""``modelhost operator``: run the Kubernetes operator (KServe's CRDs without KServe).

kopf is an optional extra (``pip install 'modelhost[kube]'``, in the modelhost images): it is
imported only when the command runs, so the rest of the CLI works without it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost.cli.kube_commands import add_cluster_arguments, kube_settings

if TYPE_CHECKING:
    from modelhost.kube.operator_settings import OperatorSettings

__all__ = ["COMMAND", "add_command", "operator_settings", "run"]

COMMAND = "operator"


def add_command(commands: Any) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="reconcile KServe's InferenceServices into Deployments, Services and routes",
        description=(
            "Watch KServe's InferenceServices, ServingRuntimes and ClusterServingRuntimes and "
            "run them on plain Kubernetes: the Deployments, Services, autoscalers and Gateway "
            "API HTTPRoutes `modelhost render` prints, owned by their InferenceService, with "
            "KServe's status written back (conditions, URL, traffic, canary rollouts). "
            "Credentials: the pod's service account, else the kubeconfig."
        ),
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help="elect one active replica through kopf's (Cluster)KopfPeering NAME (must exist); "
        "default: the one named 'modelhost' if its CRD is installed",
    )
    peering.add_argument(
        "--standalone", action="store_true", help="no peering: this replica always acts"
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest acts, the others wait (default: the start time, "
        "so the newest replica leads)",
    )
    add_cluster_arguments(parser)
    parser.add_argument(
        "--no-builtin-runtimes",
        dest="builtin_runtimes",
        action="store_false",
        help="plan only with the cluster's runtimes, not modelhost's built-in ones",
    )
    parser.add_argument(
        "--api-server",
        default=None,
        metavar="URL",
        help="talk to this API server without credentials (kubectl proxy)",
    )
    parser.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="answer liveness probes at this URL (http://0.0.0.0:8080/healthz)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = operator_settings(args)
    except errors.ModelhostError as exc:
        print(f"modelhost {COMMAND}: {exc}", file=sys.stderr)
        return 2
    try:
        from modelhost.kube.operator import run_operator
    except ImportError as exc:
        if exc.name != "kopf":
            raise
        print(
            f"modelhost {COMMAND}: kopf is not installed; install the operator's extra: "
            "pip install 'modelhost[kube]'",
            file=sys.stderr,
        )
        return 1
    import asyncio

    from modelhost.server.model_server import configure_logging

    configure_logging(args.log_level)
    asyncio.run(run_operator(settings))
    return 0


def operator_settings(args: argparse.Namespace) -> OperatorSettings:
    """The operator's settings from the command line (kopf is not imported)."""
    from modelhost.kube.operator_settings import OperatorSettings

    return OperatorSettings(
        kube=kube_settings(args),
        namespaces=tuple(dict.fromkeys(args.namespaces)),
        peering=args.peering,
        standalone=args.standalone,
        priority=args.priority,
        api_server=args.api_server,
        liveness_endpoint=args.liveness,
        builtin_runtimes=args.builtin_runtimes,
    )
