"""What ``modelhost get`` and ``describe`` print: kubectl's tables and KServe's columns."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

__all__ = ["describe", "get"]

_SERVICE_KINDS = ("isvc", "inferenceservice", "inferenceservices")
_GRAPH_KINDS = ("ig", "inferencegraph", "inferencegraphs")


def get(client: Any, args: argparse.Namespace) -> int:
    if args.name:
        items = [client.get(args.kind, args.namespace, args.name)]
    else:
        items = client.list_objects(args.kind, None if args.all_namespaces else args.namespace)
    if args.output == "json":
        data = items[0] if args.name else {"items": items}
        print(json.dumps(data, indent=2))
        return 0
    if args.output == "yaml":
        import yaml  # here, as the other outputs need none

        data = items[0] if args.name else {"items": items}
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    if not items:
        print(f"No resources found in {args.namespace} namespace.")
        return 0
    kind = args.kind.lower()
    if kind in _SERVICE_KINDS:
        header = [
            "NAME",
            "URL",
            "READY",
            "PREV",
            "LATEST",
            "PREVROLLEDOUTREVISION",
            "LATESTREADYREVISION",
            "AGE",
        ]
        rows = [_service_row(item) for item in items]
    elif kind in _GRAPH_KINDS:
        # KServe's printer columns for InferenceGraphs.
        header = ["NAME", "URL", "READY", "AGE"]
        rows = [
            [_name(item), _status(item).get("url", ""), _ready(item), _age(item)] for item in items
        ]
    else:
        header = ["NAME", "AGE"]
        rows = [[_name(item), _age(item)] for item in items]
    if args.all_namespaces:
        header.insert(0, "NAMESPACE")
        namespaces = [item["metadata"].get("namespace", "") for item in items]
        rows = [[namespace, *row] for namespace, row in zip(namespaces, rows, strict=True)]
    _table(header, rows)
    return 0


def describe(client: Any, args: argparse.Namespace) -> int:
    import yaml  # here, not with the parser that every command builds

    item = client.get(args.kind, args.namespace, args.name)
    print(yaml.safe_dump(item, sort_keys=False), end="")
    kind = args.kind.lower()
    if kind not in (*_SERVICE_KINDS, *_GRAPH_KINDS):
        return 0
    print("revisions:")
    for revision in client.revisions(args.namespace, args.name, kind):
        print(
            f"  {revision['component']}  {revision['revision']}  traffic {revision['traffic']}%"
            f"  desired {revision['desired']}  restarts {revision['restarts']}"
            f"  cold starts {revision['coldStarts']}  in flight {revision['inFlight']}"
        )
        if revision.get("lastError"):
            print(f"    last error: {revision['lastError']}")
        for replica in revision["replicas"]:
            print(
                f"    {replica['name']}  pid {replica['pid']}  {replica['state']}"
                f"  http :{replica['httpPort']}  grpc :{replica['grpcPort']}"
                f"  in flight {replica['inFlight']}"
            )
    return 0


def _name(item: dict[str, Any]) -> str:
    name: str = item["metadata"]["name"]
    return name


def _status(item: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = item.get("status") or {}
    return status


def _ready(item: dict[str, Any]) -> str:
    conditions = _status(item).get("conditions") or ()
    return next(
        (str(c.get("status", "")) for c in conditions if c.get("type") == "Ready"), "Unknown"
    )


def _service_row(item: dict[str, Any]) -> list[str]:
    status = _status(item)
    predictor = (status.get("components") or {}).get("predictor") or {}
    prev = latest = ""
    for target in predictor.get("traffic") or ():
        if target.get("latestRevision"):
            latest = str(target.get("percent", ""))
        else:
            prev = str(target.get("percent", ""))
    return [
        _name(item),
        status.get("url", ""),
        _ready(item),
        prev,
        latest,
        predictor.get("latestRolledoutRevision", ""),
        predictor.get("latestReadyRevision", ""),
        _age(item),
    ]


def _age(item: dict[str, Any]) -> str:
    created = item["metadata"].get("creationTimestamp")
    if not created:
        return ""
    when = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "   ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
