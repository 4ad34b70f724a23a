"""``modelhost trust ...``: define fairness and drift metrics and read them from the shell.

Each verb is one or two calls to TrustyAI's API (:class:`~modelhost.trust.client.TrustClient`)
on the running platform's gateway (from ``<home>/platform.json``), or on ``--url``: a
``modelhost serve --trust`` or TrustyAI's own service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost.cli.gateway_options import add_gateway_options, gateway_url

if TYPE_CHECKING:
    from modelhost.trust.client import TrustClient

__all__ = ["add_command"]

_FAIRNESS = ("spd", "dir")
_DRIFT = ("meanshift", "kstest", "approxkstest", "fouriermmd", "jensenshannon", "mmd")


def add_command(commands: Any) -> None:
    trust = commands.add_parser(
        "trust",
        help="fairness and drift metrics, data tags and names (TrustyAI's API)",
        description=(
            "Work with the inference data store and its metrics through TrustyAI's API: on "
            "the running platform's gateway, or on --url (modelhost serve --trust, TrustyAI)."
        ),
    )
    verbs = trust.add_subparsers(dest="trust_command", required=True, metavar="VERB")
    info = verbs.add_parser("info", help="models with stored inferences, rows, tags, metrics")
    names = verbs.add_parser("names", help="give stored columns readable names")
    names.add_argument("model")
    names.add_argument("--input-name", action="append", default=[], metavar="COLUMN=NAME")
    names.add_argument("--output-name", action="append", default=[], metavar="COLUMN=NAME")
    tag = verbs.add_parser("tag", help="tag rows (e.g. TRAINING: a drift reference)")
    tag.add_argument("model")
    tag.add_argument("tag")
    tag.add_argument("rows", nargs="+", metavar="START:END", help="row ranges, end excluded")
    fairness = verbs.add_parser("fairness", help="SPD or DIR now, or scheduled")
    fairness.add_argument("metric", choices=_FAIRNESS)
    fairness.add_argument("model")
    fairness.add_argument("--protected", required=True, help="the protected attribute's column")
    fairness.add_argument("--privileged", required=True, help="its privileged value")
    fairness.add_argument("--unprivileged", required=True, help="its unprivileged value")
    fairness.add_argument("--outcome", required=True, help="the outcome column")
    fairness.add_argument("--favorable", required=True, help="the favorable outcome value")
    drift = verbs.add_parser("drift", help="a drift test now, or scheduled")
    drift.add_argument("metric", choices=_DRIFT)
    drift.add_argument("model")
    drift.add_argument("--reference-tag", default="TRAINING", help="the reference slice's tag")
    drift.add_argument("--columns", default="", help="comma-separated columns (all numeric)")
    for parser in (fairness, drift):
        parser.add_argument("--batch-size", type=int, default=None, help="the newest N rows")
        parser.add_argument("--threshold-delta", type=float, default=None)
        parser.add_argument(
            "--schedule", action="store_true", help="evaluate on new data; export to Prometheus"
        )
        parser.add_argument("--name", default=None, help="the scheduled request's name")
    requests = verbs.add_parser("requests", help="the scheduled metrics")
    unschedule = verbs.add_parser("unschedule", help="stop a scheduled metric")
    unschedule.add_argument("metric", choices=_FAIRNESS + _DRIFT)
    unschedule.add_argument("request_id")
    for parser in (info, names, tag, fairness, drift, requests, unschedule):
        add_gateway_options(parser, "trust service", "MODELHOST_TRUST_URL")
    trust.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, as the trust package brings the trust app: the parser is every command's.
    from modelhost.trust.client import TrustClient

    try:
        token = args.token or os.environ.get("MODELHOST_TOKEN") or None
        with TrustClient(gateway_url(args, "MODELHOST_TRUST_URL"), token) as client:
            answer = _VERBS[args.trust_command](client, args)
    except errors.ModelhostError as exc:
        print(f"modelhost trust: {exc}", file=sys.stderr)
        return 1
    if args.format_out == "json":
        print(json.dumps(answer, indent=2))
    else:
        print(_text(args.trust_command, answer))
    return 0


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        column, sep, name = item.partition("=")
        if not sep or not column or not name:
            raise errors.InvalidInput(f"{flag} takes COLUMN=NAME, not {item!r}")
        pairs[column] = name
    return pairs


def _ranges(items: list[str]) -> list[list[int]]:
    ranges = []
    for item in items:
        start, sep, end = item.partition(":")
        try:
            ranges.append([int(start), int(end)])
        except ValueError:
            raise errors.InvalidInput(f"a row range is START:END, not {item!r}") from None
        if not sep:
            raise errors.InvalidInput(f"a row range is START:END, not {item!r}")
    return ranges


def _metric_body(args: argparse.Namespace) -> dict[str, Any]:
    from modelhost.trust.client import typed_value

    body: dict[str, Any] = {"modelId": args.model}
    if args.trust_command == "fairness":
        body.update(
            protectedAttribute=args.protected,
            privilegedAttribute=typed_value(args.privileged),
            unprivilegedAttribute=typed_value(args.unprivileged),
            outcomeName=args.outcome,
            favorableOutcome=typed_value(args.favorable),
        )
    else:
        body["referenceTag"] = args.reference_tag
        if args.columns:
            body["fitColumns"] = [c for c in args.columns.split(",") if c]
    if args.batch_size is not None:
        body["batchSize"] = args.batch_size
    if args.threshold_delta is not None:
        body["thresholdDelta"] = args.threshold_delta
    if args.name:
        body["requestName"] = args.name
    return body


def _metric_path(args: argparse.Namespace, metric: str | None = None) -> str:
    metric = metric or args.metric
    group = "group/fairness" if metric in _FAIRNESS else "drift"
    return f"/metrics/{group}/{metric}"


def _info(client: TrustClient, args: argparse.Namespace) -> Any:
    return client.get("/info")


def _names(client: TrustClient, args: argparse.Namespace) -> Any:
    body = {
        "modelId": args.model,
        "inputMapping": _pairs(args.input_name, "--input-name"),
        "outputMapping": _pairs(args.output_name, "--output-name"),
    }
    return client.post("/info/names", body)


def _tag(client: TrustClient, args: argparse.Namespace) -> Any:
    body = {"modelId": args.model, "dataTagging": {args.tag: _ranges(args.rows)}}
    return client.post("/info/tags", body)


def _metric(client: TrustClient, args: argparse.Namespace) -> Any:
    path = _metric_path(args)
    return client.post(path + ("/request" if args.schedule else ""), _metric_body(args))


def _requests(client: TrustClient, args: argparse.Namespace) -> Any:
    listed = []
    for metric in _FAIRNESS + _DRIFT:
        for entry in client.get(_metric_path(args, metric) + "/requests").get("requests", []):
            listed.append({"metric": metric, **entry})
    return listed


def _unschedule(client: TrustClient, args: argparse.Namespace) -> Any:
    return client.delete(_metric_path(args) + "/request", {"requestId": args.request_id})


_VERBS = {
    "info": _info,
    "names": _names,
    "tag": _tag,
    "fairness": _metric,
    "drift": _metric,
    "requests": _requests,
    "unschedule": _unschedule,
}


def _text(verb: str, answer: Any) -> str:
    """A short human reading of an answer; ``-o json`` gives it whole."""
    if verb == "info" and isinstance(answer, dict):
        lines = [f"{'MODEL':<24} {'ROWS':>8}  TAGS"]
        for model, entry in sorted(answer.items()):
            data = entry.get("data", {}) if isinstance(entry, dict) else {}
            tags = ", ".join(f"{k}={v}" for k, v in sorted(data.get("tags", {}).items()))
            lines.append(f"{model:<24} {data.get('observations', 0):>8}  {tags}")
        return "\n".join(lines)
    if verb in ("fairness", "drift") and isinstance(answer, dict) and "value" in answer:
        bounds = answer.get("thresholds") or {}
        verdict = "OUTSIDE the bounds" if bounds.get("outsideBounds") else "within the bounds"
        return (
            f"{answer.get('name')} = {answer['value']:.6g} ({verdict} "
            f"{bounds.get('lowerBound')} .. {bounds.get('upperBound')})\n"
            f"{answer.get('specificDefinition', '')}"
        )
    if verb in ("fairness", "drift") and isinstance(answer, dict) and "requestId" in answer:
        return f"scheduled: {answer['requestId']}"
    if verb == "tag" and isinstance(answer, dict) and isinstance(answer.get("tagged"), dict):
        return "\n".join(f"tagged {n} rows {tag}" for tag, n in answer["tagged"].items())
    if verb == "names" and isinstance(answer, dict):
        return "names set"
    if verb == "requests" and isinstance(answer, list):
        lines = [f"{'METRIC':<14} {'MODEL':<20} REQUEST"]
        for entry in answer:
            request = entry.get("request", {})
            lines.append(
                f"{entry['metric']:<14} {request.get('modelId', ''):<20} {entry.get('id')}"
            )
        return "\n".join(lines)
    return json.dumps(answer, indent=2)
