"""``modelhost render`` (KServe YAML → Kubernetes manifests) and ``modelhost fetch``.

``render`` is ``modelhost plan`` carried one step further: the same parsing, runtimes and
planner, then :func:`modelhost.kube.render_plan`; an InferenceGraph is planned with the
InferenceServices of the same file (``control.plan_graph``) and renders as its router.
``fetch`` is the storage initializer the rendered pods run: it puts a ``storageUri`` into
``/mnt/models`` with modelhost's storage clients, as KServe's ``storage-initializer`` image
does, and resolves KServe's storage spec (``STORAGE_CONFIG`` and ``STORAGE_OVERRIDE_CONFIG``)
into a URI and its credentials.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelhost import errors

if TYPE_CHECKING:
    from modelhost.control.objects import ApiObject, InferenceGraph
    from modelhost.control.plan_types import ServicePlan
    from modelhost.kube import KubeSettings

__all__ = ["COMMANDS", "add_cluster_arguments", "add_commands", "fetch", "kube_settings", "run"]

COMMANDS = ("render", "fetch")


def add_commands(commands: Any) -> None:
    render = commands.add_parser(
        "render",
        help="print the Kubernetes manifests for KServe YAML (Deployments, Services, routes)",
        description=(
            "Plan every InferenceService in a YAML file as `modelhost plan` does (the file's "
            "ServingRuntimes and ClusterServingRuntimes first, then the built-in ones) and "
            "print the Kubernetes objects that run it without KServe: a Deployment per "
            "component revision, Services, an HPA or KEDA ScaledObject, a "
            "PodDisruptionBudget and Gateway API HTTPRoutes with the canary weights. An "
            "InferenceGraph renders as its router (a Deployment running `modelhost graph`, "
            "its Services and HTTPRoute), calling the file's InferenceServices of its "
            "namespace; steps naming others answer 503 until they are deployed."
        ),
    )
    render.add_argument("-f", "--filename", required=True, help="YAML or JSON file ('-': stdin)")
    render.add_argument(
        "-o", "--output", choices=["yaml", "json"], default="yaml", help="output format"
    )
    render.add_argument(
        "-n", "--namespace", default=None, help="namespace of objects that name none"
    )
    add_cluster_arguments(render)
    render.set_defaults(handler=run)
    fetch_command = commands.add_parser(
        "fetch",
        help="download a storageUri into a folder (the pods' storage initializer)",
        description=(
            "Fetch a model (s3://, gs://, azure, http(s)://, hf://, a local or pvc:// path) "
            "into DEST with modelhost's storage clients and their KServe credential "
            "variables, as KServe's storage-initializer does before the server starts. "
            "KServe's storage spec comes as STORAGE_CONFIG (the storage Secret's entry: "
            "type, bucket, endpoint_url, access_key_id, ...) and STORAGE_OVERRIDE_CONFIG "
            "(the spec's parameters); with --storage-path the model is "
            "<type>://<bucket>/<path>, else the entry's credentials fetch URI."
        ),
    )
    fetch_command.add_argument(
        "uri", nargs="?", default=None, help="the storageUri (not with --storage-path)"
    )
    fetch_command.add_argument("dest", help="the folder to put the model's files in")
    fetch_command.add_argument(
        "--storage-path",
        default=None,
        metavar="PATH",
        help="the storage spec's path in the bucket STORAGE_CONFIG names",
    )
    fetch_command.set_defaults(handler=run)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that shape what runs on the cluster (``KubeSettings``): ``render``'s and
    ``operator``'s alike, so the manifests one prints are the ones the other applies."""
    parser.add_argument(
        "--gateway",
        default="kserve/kserve-ingress-gateway",
        metavar="NAMESPACE/NAME",
        help="the Gateway the HTTPRoutes attach to (KServe's default)",
    )
    parser.add_argument("--domain", default=None, help="ingress domain (default example.com)")
    parser.add_argument(
        "--prometheus",
        default=None,
        metavar="URL",
        help="the Prometheus KEDA's triggers query",
    )
    parser.add_argument(
        "--initializer-image", default=None, help="the image of the storage initializer"
    )
    parser.add_argument(
        "--storage-secret",
        default=None,
        metavar="NAME",
        help="the Secret a model's storage spec names (KServe's default: storage-config)",
    )
    parser.add_argument(
        "--image",
        dest="image_overrides",
        action="append",
        default=[],
        metavar="IMAGE=REPLACEMENT",
        help="run REPLACEMENT where a runtime names IMAGE (repeatable: mirrors, digests)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "fetch":
            fetch(args.uri, Path(args.dest), storage_path=args.storage_path)
            return 0
        return _render(args)
    except (errors.ModelhostError, OSError, ValueError) as exc:
        print(f"modelhost {args.command}: {exc}", file=sys.stderr)
        return 1


def _render(args: argparse.Namespace) -> int:
    """Print the manifests of every InferenceService and InferenceGraph in the file.

    In the file's order; 1 on the first that fails.
    """
    from modelhost import control
    from modelhost.kube import manifests_json, manifests_yaml, render_plan

    settings = kube_settings(args)
    text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    objects = control.parse_documents(text, source=args.filename)
    runtimes = [
        obj
        for obj in objects
        if isinstance(obj, (control.ServingRuntime, control.ClusterServingRuntime))
    ]
    runtimes = [_in_namespace(obj, args.namespace) for obj in runtimes]
    services: dict[tuple[str, str], control.ServicePlan] = {}
    for obj in objects:
        if isinstance(obj, control.InferenceService):
            isvc = _in_namespace(obj, args.namespace)
            # settings.planner keeps KServe's default mode, Knative: its revisions and canary
            # splits are carried out here with Deployments and HTTPRoute weights (KubeSettings).
            services[(isvc.namespace, isvc.name)] = control.plan(
                isvc, [*runtimes, *control.builtin_runtimes()], config=settings.planner
            )
    manifests: list[dict[str, Any]] = []
    for obj in objects:
        if isinstance(obj, control.InferenceService):
            plan = services[(obj.namespace, obj.name)]
        elif isinstance(obj, control.InferenceGraph):
            plan = _graph_plan(
                _in_namespace(obj, args.namespace), services, settings, args.filename
            )
        else:
            continue
        for warning in plan.warnings:
            print(f"modelhost render: {plan.namespace}/{plan.name}: {warning}", file=sys.stderr)
        manifests.extend(render_plan(plan, settings))
    out = manifests_json(manifests) if args.output == "json" else manifests_yaml(manifests)
    sys.stdout.write(out)
    return 0


def _graph_plan(
    graph: InferenceGraph,
    services: Mapping[tuple[str, str], ServicePlan],
    settings: KubeSettings,
    source: str,
) -> ServicePlan:
    """The router's plan, with the InferenceServices of file ``source`` in the graph's namespace.

    A service the graph names that is not in the file is noted on stderr: the graph renders,
    and its steps to that service answer 503 until it is deployed.
    """
    from modelhost import control

    known = {
        name: plan for (namespace, name), plan in services.items() if namespace == graph.namespace
    }
    missing = [name for name in control.graph_services(graph) if name not in known]
    if missing:
        noun = "InferenceService" if len(missing) == 1 else "InferenceServices"
        print(
            f"modelhost render: InferenceGraph {graph.namespace}/{graph.name} calls {noun} "
            f"{', '.join(missing)}, not in {source} (namespace {graph.namespace}): "
            "its steps to them answer 503 until they are deployed",
            file=sys.stderr,
        )
    return control.plan_graph(graph, known, config=settings.planner)


def kube_settings(args: argparse.Namespace) -> KubeSettings:
    """``KubeSettings`` from the flags of :func:`add_cluster_arguments`."""
    from modelhost.control import PlatformConfig
    from modelhost.kube import KubeSettings

    namespace, sep, name = args.gateway.partition("/")
    if not sep or not namespace or not name:
        raise errors.InvalidInput(f"--gateway takes NAMESPACE/NAME, not {args.gateway!r}")
    overrides: dict[str, str] = {}
    for raw in args.image_overrides:
        image, sep, replacement = raw.partition("=")
        if not sep or not image or not replacement:
            raise errors.InvalidInput(f"--image takes IMAGE=REPLACEMENT, not {raw!r}")
        overrides[image] = replacement
    changes: dict[str, Any] = {
        "gateway_namespace": namespace,
        "gateway_name": name,
        "image_overrides": overrides,
    }
    if args.prometheus:
        changes["prometheus_address"] = args.prometheus
    if args.initializer_image:
        changes["initializer_image"] = args.initializer_image
    planner: dict[str, Any] = {}
    if args.domain:
        planner["ingress_domain"] = args.domain
    if args.storage_secret:
        planner["storage_spec_secret"] = args.storage_secret
    if planner:
        changes["planner"] = PlatformConfig(**planner)
    return KubeSettings(**changes)


_Object = TypeVar("_Object", bound="ApiObject")


def _in_namespace(obj: _Object, namespace: str | None) -> _Object:
    """``obj`` in ``--namespace`` when it names none; refused when it names another (kubectl)."""
    from modelhost.control import ClusterServingRuntime
    from modelhost.control.errors import ValidationError

    if namespace is None or isinstance(obj, ClusterServingRuntime):
        return obj
    if obj.metadata.namespace is None:
        obj.metadata.namespace = namespace
    elif obj.metadata.namespace != namespace:
        raise ValidationError.single(
            "metadata.namespace",
            f"{obj.metadata.namespace!r} does not match --namespace {namespace!r}",
            f"{obj.kind} {obj.metadata.name}",
        )
    return obj


def fetch(
    uri: str | None,
    dest: Path,
    *,
    storage_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Put the files of ``uri`` in ``dest`` (created if need be), as KServe's initializer.

    With KServe's storage spec in ``environ`` (default: the process's environment), the
    model is ``storage_path`` in the storage it describes, or ``uri`` fetched with its
    credentials. The download goes through :func:`modelhost.storage.download` into a cache
    inside ``dest`` (the same file system), so the files are then moved, not copied, into
    place; a path already on this machine (``pvc://``, ``file://``) is copied.
    """
    from modelhost import storage
    from modelhost.settings import StorageSettings
    from modelhost.storage.storage_config import resolve_storage, storage_entry

    if (uri is None) == (storage_path is None):
        raise errors.InvalidInput("give a storageUri or --storage-path (one of them)")
    env = dict(os.environ if environ is None else environ)
    entry = storage_entry(env)
    if entry is not None:
        location = resolve_storage(entry, path=storage_path, uri=uri)
        uri = location.uri
        env.update(location.environ)
    elif storage_path is not None:
        raise errors.StorageError(
            "--storage-path needs the storage configuration in STORAGE_CONFIG (the storage "
            "Secret's entry) or STORAGE_OVERRIDE_CONFIG (the storage spec's parameters); "
            "neither is set: is the Secret's key missing?"
        )
    assert uri is not None
    dest.mkdir(parents=True, exist_ok=True)
    settings = StorageSettings.from_env(env)
    cache = Path(tempfile.mkdtemp(prefix=".modelhost-fetch-", dir=dest))
    try:
        fetched = storage.download(uri, settings.replace(cache_dir=str(cache), progress=False))
        if storage.is_remote(uri):
            for item in sorted(fetched.iterdir()):
                _remove(dest / item.name)
                os.replace(item, dest / item.name)
        elif fetched.is_dir():
            shutil.copytree(fetched, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(fetched, dest / fetched.name)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"modelhost fetch: {uri} is in {dest}", file=sys.stderr)


def _remove(path: Path) -> None:
    """A file or folder left by an earlier, interrupted fetch into the same folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
