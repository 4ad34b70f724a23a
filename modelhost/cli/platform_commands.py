"""The platform's commands: ``up``, ``down``, and ``kubectl``'s verbs for KServe's objects."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.cli import platform_views

__all__ = ["COMMANDS", "add_commands", "run"]

COMMANDS = ("up", "down", "apply", "get", "describe", "delete", "logs", "token")


def add_commands(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="start the embedded platform (KServe's InferenceServices on this machine)",
        description=(
            "Start the platform: an HTTP gateway on --port, a gRPC gateway on --grpc-port, "
            "the control API on a Unix socket in --home (and loopback --api-port), state in "
            "--home. Services applied before come back."
        ),
    )
    _home(up)
    up.add_argument("--host", default="127.0.0.1", help="address the gateways listen on")
    up.add_argument("--port", type=int, default=8080, help="HTTP gateway (inference only)")
    up.add_argument("--grpc-port", "--grpc_port", type=int, default=8081, help="gRPC gateway")
    up.add_argument(
        "--auth",
        choices=["auto", "tokens", "none"],
        default="auto",
        help="bearer tokens on the gateways (auto: on when --host is beyond loopback)",
    )
    up.add_argument(
        "--api-port",
        "--api_port",
        type=int,
        default=None,
        help="also serve the control API on loopback TCP (admin/deployer tokens required)",
    )
    up.add_argument("--api-host", "--api_host", default="127.0.0.1", help=argparse.SUPPRESS)
    up.add_argument("--ssl_certfile", "--ssl-certfile", default="", help="gateway TLS certificate")
    up.add_argument("--ssl_keyfile", "--ssl-keyfile", default="", help="gateway TLS key")
    up.add_argument(
        "--ssl_ca_certs", "--ssl-ca-certs", default="", help="require client certificates"
    )
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument("--domain", default=None, help="ingress domain (default example.com)")
    up.add_argument(
        "--config",
        default=None,
        help="YAML file of platform settings (KServe's and Knative's defaults: "
        "stable_window_s, scale_to_zero_grace_period_s, ingress_domain, ...)",
    )
    up.add_argument(
        "--replica-start-timeout", type=float, default=300.0, help="seconds to become ready"
    )
    up.add_argument(
        "--no-zygote",
        dest="zygote",
        action="store_false",
        help="spawn every replica (default: fork tabular ones from a pre-imported interpreter)",
    )
    up.add_argument(
        "--no-batch-scheduling",
        dest="batch_scheduling",
        action="store_false",
        help="leave the gateway's event loop under SCHED_OTHER (default: SCHED_BATCH on Linux)",
    )
    up.add_argument(
        "--graph-router",
        choices=["in-process", "replica"],
        default="in-process",
        help="run InferenceGraph routers in the gateway's process (default) or as replicas",
    )
    up.add_argument(
        "--registry-db",
        default=None,
        metavar="URL",
        help="the model registry's PostgreSQL database (postgresql://...); "
        "default: registry.sqlite in the home",
    )
    down = commands.add_parser("down", help="stop the platform started with `up -d`")
    _home(down)
    apply = commands.add_parser("apply", help="create or change objects from YAML files")
    _client(apply)
    apply.add_argument(
        "-f", "--filename", action="append", required=True, help="YAML or JSON file ('-': stdin)"
    )
    apply.add_argument(
        "--wait",
        action="store_true",
        help="return once the InferenceServices and InferenceGraphs are Ready",
    )
    apply.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")
    get = commands.add_parser("get", help="list InferenceServices (or runtimes) and status")
    _client(get)
    get.add_argument("kind", help="isvc, ig, servingruntime or clusterservingruntime")
    get.add_argument("name", nargs="?", default=None)
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=["yaml", "json", "wide"], default=None)
    describe = commands.add_parser(
        "describe", help="an InferenceService or InferenceGraph, its revisions, replicas"
    )
    _client(describe)
    describe.add_argument("kind", help="isvc or ig")
    describe.add_argument("name")
    delete = commands.add_parser("delete", help="delete objects (their replicas stop)")
    _client(delete)
    delete.add_argument("kind", nargs="?", default=None)
    delete.add_argument("name", nargs="?", default=None)
    delete.add_argument("-f", "--filename", action="append", default=None)
    logs = commands.add_parser("logs", help="the log of a service's newest replica")
    _client(logs)
    logs.add_argument("name", help="InferenceService name (ig/NAME: an InferenceGraph's)")
    logs.add_argument(
        "-c",
        "--component",
        default=None,
        help="predictor (the default), transformer or explainer; a graph has only its router",
    )
    logs.add_argument("--tail", type=int, default=200)
    from modelhost.cli import token_commands

    token_commands.add_command(commands, _home)


def _home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        default=None,
        help="state and logs folder (default $MODELHOST_HOME or ~/.modelhost)",
    )


def _client(parser: argparse.ArgumentParser) -> None:
    _home(parser)
    parser.add_argument(
        "--server",
        default=None,
        help="control API address: unix:PATH or http(s)://HOST:PORT (default: the running one)",
    )
    parser.add_argument(
        "--token", default=None, help="bearer token for a TCP control API ($MODELHOST_TOKEN)"
    )
    parser.add_argument("-n", "--namespace", default="default")


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            return _down(args)
        if args.command == "token":
            from modelhost.cli import token_commands

            return token_commands.run(args, _home_path(args))
        return _client_command(args)
    except errors.ModelhostError as exc:
        print(f"modelhost {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"modelhost {args.command}: {exc}", file=sys.stderr)
        return 1


def _home_path(args: argparse.Namespace) -> Path:
    from modelhost.local.settings import default_home

    return Path(args.home) if args.home else default_home()


# -- up / down ------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    from modelhost.server.model_server import configure_logging

    home = _home_path(args)
    if args.detach:
        return _detach(args, home)
    settings = _settings(args, home)
    configure_logging("INFO")
    from modelhost.local import server

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux
        import asyncio

        asyncio.run(server.run(settings))
    else:
        uvloop.run(server.run(settings))
    return 0


def _settings(args: argparse.Namespace, home: Path) -> Any:
    from modelhost.control import PlatformConfig
    from modelhost.local.settings import PlatformSettings

    overrides: dict[str, Any] = {}
    if args.config:
        import yaml

        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise errors.InvalidInput(f"{args.config}: expected a mapping of settings")
        known = {f.name for f in dataclasses.fields(PlatformConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise errors.InvalidInput(
                f"{args.config}: unknown settings {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        overrides.update(loaded)
    if args.domain:
        overrides["ingress_domain"] = args.domain
    return PlatformSettings(
        home=home,
        host=args.host,
        http_port=args.port,
        grpc_port=args.grpc_port,
        config=PlatformConfig(**overrides),
        workdir=os.getcwd(),
        replica_start_timeout_s=args.replica_start_timeout,
        zygote=args.zygote,
        batch_scheduling=args.batch_scheduling,
        graph_router=args.graph_router,
        registry_db=args.registry_db,
        auth=args.auth,
        api_port=args.api_port,
        api_host=args.api_host,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_ca_certs=args.ssl_ca_certs,
    )


def _detach(args: argparse.Namespace, home: Path) -> int:
    from modelhost.local.client import PlatformClient

    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # state, tokens, the audit log
    address = home / "platform.json"
    running = _running_pid(address)
    if running is not None:
        print(f"modelhost up: a platform already runs (pid {running}); `modelhost down` first")
        return 1
    argv = [a for a in sys.argv[1:] if a not in ("-d", "--detach")]
    if not argv or argv[0] != "up":
        argv = ["up", *argv]
    if "--home" not in argv:
        argv += ["--home", str(home)]
    log_path = home / "platform.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhost", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"modelhost up: the platform exited; see {log_path}", file=sys.stderr)
            return 1
        try:
            found = json.loads(address.read_text())
        except (OSError, ValueError):
            found = {}
        if found.get("pid") == process.pid and PlatformClient(found["api"], 2).healthy():
            print(f"modelhost platform running in the background (pid {process.pid})")
            print(f"  gateway: {found['url']}   gRPC: {found['grpc']}   tokens: {found['auth']}")
            print(
                f"  control API: {found['api']}"
                + (f" and {found['api_url']}" if found.get("api_url") else "")
            )
            print(f"  log: {log_path}   stop: modelhost down")
            return 0
        time.sleep(0.1)
    print(f"modelhost up: the platform did not start in 60s; see {log_path}", file=sys.stderr)
    return 1


def _running_pid(address: Path) -> int | None:
    try:
        pid = int(json.loads(address.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _runs(pid) else None


def _runs(pid: int) -> bool:
    """Whether a process runs: a zombie (a killed platform no one has reaped yet) does not."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: the signal's answer is all there is
    return state not in ("Z", "X")


def _down(args: argparse.Namespace) -> int:
    home = _home_path(args)
    pid = _running_pid(home / "platform.json")
    if pid is None:
        print("modelhost down: no platform is running")
        return _reap(home)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not _runs(pid):
            print(f"modelhost platform (pid {pid}) stopped")
            return 0
        time.sleep(0.1)
    print(f"modelhost down: pid {pid} still runs after 60s", file=sys.stderr)
    return 1


def _reap(home: Path) -> int:
    """Kill what the replicas of a platform that was killed on this home left running."""
    from modelhost.local.settings import PlatformSettings

    state = PlatformSettings(home=home).state_path
    if not state.exists():
        return 0
    from modelhost.local.reaper import reap_leftovers
    from modelhost.local.store import Store

    store = Store(state)
    try:
        killed = reap_leftovers(store)
    finally:
        store.close()
    if killed:
        print(f"modelhost down: killed {len(killed)} process(es) its replicas left running")
    return 0


# -- the kubectl verbs ------------------------------------------------------------------------


def _client_command(args: argparse.Namespace) -> int:
    from modelhost.local.client import PlatformClient, platform_url

    url = platform_url(args.server, _home_path(args), dict(os.environ))
    client = PlatformClient(url, token=args.token or os.environ.get("MODELHOST_TOKEN") or None)
    if args.command == "apply":
        applied = []
        for filename in args.filename:
            text = sys.stdin.buffer.read() if filename == "-" else Path(filename).read_bytes()
            for item in client.apply(text, source=filename):
                print(f"{_kind_name(item['kind'])}/{item['name']} {item['result']}")
                applied.append(item)
        services = [i for i in applied if i["kind"] in ("InferenceService", "InferenceGraph")]
        return _wait_ready(client, services, args.timeout) if args.wait else 0
    if args.command == "get":
        return platform_views.get(client, args)
    if args.command == "describe":
        return platform_views.describe(client, args)
    if args.command == "delete":
        return _delete(client, args)
    if args.command == "logs":
        kind, _, name = args.name.rpartition("/")
        text = client.logs(args.namespace, name, args.component, args.tail, kind or "isvc")
        print(text, end="")
        return 0
    return 2


def _wait_ready(client: Any, services: list[dict[str, Any]], timeout: float) -> int:
    """Poll until every service serves what was applied; 1 on a failure or at time-out."""
    deadline = time.monotonic() + timeout
    # A forked replica is Ready in about 0.1 s: poll closely at first, then gently.
    close_until = time.monotonic() + 2.0
    waiting = list(services)
    why = {item["name"]: "no status yet" for item in services}
    while waiting:
        item = waiting[0]
        found = client.get(item["kind"], item["namespace"], item["name"])
        done, failed, why[item["name"]] = _rolled_out(found)
        if failed:
            print(f"modelhost apply: {item['name']} failed: {why[item['name']]}", file=sys.stderr)
            return 1
        if done:
            print(f"{item['kind'].lower()}/{item['name']} ready at {found['status'].get('url')}")
            waiting.pop(0)
            continue
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02 if time.monotonic() < close_until else 0.2)
    for item in waiting:
        print(
            f"modelhost apply: {item['name']} not Ready in {timeout:.0f}s: {why[item['name']]}",
            file=sys.stderr,
        )
    return 1 if waiting else 0


def _rolled_out(found: dict[str, Any]) -> tuple[bool, bool, str]:
    """(done, failed, why not done) of a service after an apply.

    Ready is not enough: during a rollout the previous revision keeps the service Ready. Done
    is: the status is of the applied generation, Ready, and in every component the newest
    revision (the one this generation planned) is the latest ready one and has the newest
    revision's share of the traffic.
    """
    status = found.get("status") or {}
    generation = found["metadata"].get("generation")
    if status.get("observedGeneration") != generation:
        return False, False, f"the platform has not reconciled generation {generation} yet"
    conditions = {c.get("type"): c for c in status.get("conditions") or ()}
    ready = conditions.get("Ready") or {}
    if ready.get("reason") in ("PlanFailed", "Stopped"):
        return False, True, ready.get("message") or ready["reason"]
    for kind, component in sorted((status.get("components") or {}).items()):
        newest = component.get("latestCreatedRevision")
        if component.get("latestReadyRevision") != newest:
            latest = conditions.get("LatestDeploymentReady") or {}
            detail = latest.get("message") if kind == "predictor" else None
            return False, False, detail or f"{kind} revision {newest} is not ready yet"
        serving = [t for t in component.get("traffic") or () if t.get("latestRevision")]
        if any(t.get("revisionName") != newest for t in serving):
            return False, False, f"{kind} traffic has not moved to revision {newest} yet"
    if ready.get("status") != "True":
        return False, False, ready.get("message") or "not Ready yet"
    return True, False, ""


def _kind_name(kind: str) -> str:
    return f"{kind.lower()}.serving.kserve.io"


def _delete(client: Any, args: argparse.Namespace) -> int:
    from modelhost import control

    targets: list[tuple[str, str, str]] = []
    for filename in args.filename or ():
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        for obj in control.parse_documents(text, source=filename):
            namespace = obj.metadata.namespace or args.namespace
            targets.append((obj.kind, namespace, obj.metadata.name or ""))
    if args.kind and args.name:
        targets.append((args.kind, args.namespace, args.name))
    if not targets:
        print(
            "modelhost delete: name an object (delete isvc NAME) or give -f FILE", file=sys.stderr
        )
        return 2
    for kind, namespace, name in targets:
        client.delete(kind, namespace, name)
        from modelhost.local.client import resource

        plural = resource(kind)[0]
        print(f'{plural[:-1]}.serving.kserve.io "{name}" deleted')
    return 0
