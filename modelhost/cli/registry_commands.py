"""``modelhost registry ...``: register models, read their cards, and deploy a version.

Each verb is a few calls to Kubeflow Model Registry's REST API: on the running platform's
gateway (from ``<home>/platform.json``), or on ``--url`` (Kubeflow's own registry too).
``deploy`` writes an InferenceService whose storageUri is ``model-registry://<model>/<version>``
and applies it through the platform's control API (or prints it, ``--dry-run``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost.cli.gateway_options import add_gateway_options, gateway_url, home_of

if TYPE_CHECKING:
    from modelhost.storage.model_registry import RegistryRestClient

__all__ = ["add_command", "inference_service", "register", "run"]

_URL_VARIABLE = "MODELHOST_REGISTRY_URL"

_LABELS = (
    "modelregistry.kubeflow.org/registered-model-id",
    "modelregistry.kubeflow.org/model-version-id",
)
_PAGE = {"pageSize": "100"}


def add_command(commands: Any) -> None:
    registry = commands.add_parser(
        "registry",
        help="register, list, show and deploy models (Kubeflow Model Registry's API)",
        description=(
            "Work with the model registry through its REST API: on the running platform's "
            "gateway, or on --url (Kubeflow's Model Registry too)."
        ),
    )
    verbs = registry.add_subparsers(dest="registry_command", required=True, metavar="VERB")
    register_verb = verbs.add_parser("register", help="register a version of a model")
    register_verb.add_argument("name", help="the registered model's name (created if new)")
    register_verb.add_argument("version", help="the new version's name")
    register_verb.add_argument("uri", help="where its files are (s3://, gs://, hf://, a path...)")
    register_verb.add_argument("format", help="the model format (sklearn, xgboost, onnx...)")
    register_verb.add_argument("--format-version", default=None, help="the format's version")
    register_verb.add_argument("--author", default=None, help="the version's author")
    register_verb.add_argument("--description", default=None, help="the model's description")
    register_verb.add_argument("--license", default=None, help="the model's license")
    register_verb.add_argument("--readme", type=Path, default=None, metavar="FILE")
    register_verb.add_argument("--tasks", default=None, help="comma-separated tasks")
    register_verb.add_argument("--maturity", default=None, help="e.g. Emerging, Stable")
    register_verb.add_argument(
        "--metric", action="append", default=[], metavar="KEY=VALUE", help="a version metric"
    )
    list_verb = verbs.add_parser("list", help="the registered models, or a model's versions")
    list_verb.add_argument("name", nargs="?", default=None, help="a model: list its versions")
    show = verbs.add_parser("show", help="a model's card, or a version and its artifact")
    show.add_argument("name")
    show.add_argument("version", nargs="?", default=None)
    deploy = verbs.add_parser("deploy", help="serve a version on the platform")
    deploy.add_argument("name")
    deploy.add_argument("version")
    deploy.add_argument("--service", default=None, help="the InferenceService's name")
    deploy.add_argument("-n", "--namespace", default="default")
    deploy.add_argument("--runtime", default=None, help="the ServingRuntime to use")
    deploy.add_argument("--dry-run", action="store_true", help="print the object, apply nothing")
    deploy.add_argument(
        "--server", default=None, help="the control API ($MODELHOST_SERVER; default: the home's)"
    )
    for parser in (register_verb, list_verb, show, deploy):
        add_gateway_options(parser, "registry", _URL_VARIABLE)
    registry.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not with the parser that every command builds.
    from modelhost.storage.model_registry import RegistryRestClient

    token = args.token or os.environ.get("MODELHOST_TOKEN") or None
    try:
        client = RegistryRestClient(gateway_url(args, _URL_VARIABLE), token)
        try:
            answer = _VERBS[args.registry_command](client, args)
        finally:
            client.close()
    except errors.ModelhostError as exc:
        print(f"modelhost registry: {exc}", file=sys.stderr)
        return 1
    if isinstance(answer, str):
        print(answer, end="" if answer.endswith("\n") else "\n")
    elif args.format_out == "json":
        print(json.dumps(answer, indent=2))
    else:
        print(_text(args.registry_command, answer))
    return 0


# -- the verbs --------------------------------------------------------------------------------


def register(
    client: RegistryRestClient,
    name: str,
    version: str,
    uri: str,
    model_format: str,
    *,
    format_version: str | None = None,
    author: str | None = None,
    card: dict[str, Any] | None = None,
    metrics: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register ``version`` of model ``name`` (created, or its card updated) with its artifact.

    ``card`` holds RegisteredModel fields (description, license, readme, tasks, maturity);
    ``metrics`` become the version's customProperties (numbers as doubles). Returns
    ``{"model", "version", "artifact"}`` as the registry answered them.
    """
    card = {k: v for k, v in (card or {}).items() if v is not None}
    model = _find(client, "/registered_model", {"name": name})
    if model is None:
        model = client.post("/registered_models", {"name": name, **card})
    elif card:
        model = client.patch(f"/registered_models/{model['id']}", card)
    body: dict[str, Any] = {"name": version, "registeredModelId": model["id"]}
    if author:
        body["author"] = author
    if metrics:
        body["customProperties"] = {k: _metadata_value(v) for k, v in metrics.items()}
    created = client.post(f"/registered_models/{model['id']}/versions", body)
    artifact_body = {"artifactType": "model-artifact", "name": name, "uri": uri}
    artifact_body["modelFormatName"] = model_format
    if format_version:
        artifact_body["modelFormatVersion"] = format_version
    artifact = client.post(f"/model_versions/{created['id']}/artifacts", artifact_body)
    return {"model": model, "version": created, "artifact": artifact}


def inference_service(
    service: str,
    namespace: str,
    model: dict[str, Any],
    version: dict[str, Any],
    model_format: str,
    runtime: str | None = None,
) -> dict[str, Any]:
    """The InferenceService that serves ``version`` from the registry, labelled as Kubeflow's
    controller reads it."""
    spec: dict[str, Any] = {
        "modelFormat": {"name": model_format},
        "storageUri": f"model-registry://{model['name']}/{version['name']}",
    }
    if runtime:
        spec["runtime"] = runtime
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service,
            "namespace": namespace,
            "labels": {_LABELS[0]: str(model["id"]), _LABELS[1]: str(version["id"])},
        },
        "spec": {"predictor": {"model": spec}},
    }


def _register(client: RegistryRestClient, args: argparse.Namespace) -> Any:
    card: dict[str, Any] = {
        "description": args.description,
        "license": args.license,
        "maturity": args.maturity,
        "readme": args.readme.read_text() if args.readme else None,
        "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
    }
    try:
        return register(
            client,
            args.name,
            args.version,
            args.uri,
            args.format,
            format_version=args.format_version,
            author=args.author,
            card=card,
            metrics=_pairs(args.metric),
        )
    except OSError as exc:
        raise errors.InvalidInput(f"--readme: {exc}") from None


def _list(client: RegistryRestClient, args: argparse.Namespace) -> Any:
    if args.name is None:
        return _all(client, "/registered_models")
    model = _model(client, args.name)
    return _all(client, f"/registered_models/{model['id']}/versions")


def _show(client: RegistryRestClient, args: argparse.Namespace) -> Any:
    model = _model(client, args.name)
    if args.version is None:
        versions = _all(client, f"/registered_models/{model['id']}/versions")
        return {"model": model, "versions": versions}
    version = _version(client, model, args.version)
    return {"model": model, "version": version, "artifact": _artifact(client, version)}


def _deploy(client: RegistryRestClient, args: argparse.Namespace) -> Any:
    model = _model(client, args.name)
    version = _version(client, model, args.version)
    artifact = _artifact(client, version)
    model_format = (artifact or {}).get("modelFormatName")
    if not model_format:
        raise errors.InvalidInput(
            f"{args.name}/{args.version}: its model artifact names no modelFormatName"
        )
    service = args.service or _service_name(args.name)
    document = inference_service(
        service, args.namespace, model, version, str(model_format), args.runtime
    )
    import yaml

    text = yaml.safe_dump(document, sort_keys=False)
    if args.dry_run:
        return text
    from modelhost.local.client import PlatformClient, platform_url

    server = platform_url(args.server, home_of(args), dict(os.environ))
    token = args.token or os.environ.get("MODELHOST_TOKEN") or None
    results = PlatformClient(server, token=token).apply(text.encode(), source="registry deploy")
    return "\n".join(
        f"{r['kind'].lower()}/{r['name']} {r['result']} (model-registry://"
        f"{args.name}/{args.version})"
        for r in results
    )


_VERBS = {"register": _register, "list": _list, "show": _show, "deploy": _deploy}


# -- helpers ----------------------------------------------------------------------------------


def _find(client: RegistryRestClient, path: str, params: dict[str, str]) -> dict[str, Any] | None:
    from modelhost.storage.model_registry import RegistryRequestFailed

    try:
        found: dict[str, Any] = client.get(path, params)
    except RegistryRequestFailed as exc:
        if exc.status_code == 404:
            return None
        raise
    return found


def _model(client: RegistryRestClient, name: str) -> dict[str, Any]:
    model = _find(client, "/registered_model", {"name": name})
    if model is None:
        raise errors.ModelNotFound(f"no registered model {name!r}")
    return model


def _version(client: RegistryRestClient, model: dict[str, Any], name: str) -> dict[str, Any]:
    params = {"name": name, "parentResourceId": str(model["id"])}
    version = _find(client, "/model_version", params)
    if version is None:
        raise errors.ModelNotFound(f"no version {name!r} of model {model['name']!r}")
    return version


def _artifact(client: RegistryRestClient, version: dict[str, Any]) -> dict[str, Any] | None:
    newest = {"artifactType": "model-artifact", "orderBy": "CREATE_TIME", "sortOrder": "DESC"}
    items = client.get(f"/model_versions/{version['id']}/artifacts", newest).get("items") or []
    return dict(items[0]) if items else None


def _all(client: RegistryRestClient, path: str) -> list[dict[str, Any]]:
    """Every item of a list, page after page."""
    items: list[dict[str, Any]] = []
    params = dict(_PAGE)
    while True:
        page = client.get(path, params)
        items.extend(page.get("items") or [])
        token = page.get("nextPageToken")
        if not token:
            return items
        params["nextPageToken"] = token


def _service_name(model: str) -> str:
    """An InferenceService name (a DNS label) from a model's name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".rstrip("-")
    return name[:63].rstrip("-")


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.InvalidInput(f"--metric takes KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def _metadata_value(text: str) -> dict[str, Any]:
    try:
        return {"metadataType": "MetadataDoubleValue", "double_value": float(text)}
    except ValueError:
        return {"metadataType": "MetadataStringValue", "string_value": text}


def _text(verb: str, answer: Any) -> str:
    """A short human reading of an answer; ``-o json`` gives it whole."""
    if verb == "register":
        model, version, artifact = answer["model"], answer["version"], answer["artifact"]
        return (
            f"registered {model['name']}/{version['name']} (model {model['id']}, version "
            f"{version['id']}) → {artifact.get('uri')}"
        )
    if verb == "list":
        lines = [f"{'ID':>6}  {'NAME':<32} {'STATE':<9} UPDATED"]
        for item in answer:
            lines.append(
                f"{item['id']:>6}  {item.get('name', ''):<32} {item.get('state', ''):<9} "
                f"{item.get('lastUpdateTimeSinceEpoch', '')}"
            )
        return "\n".join(lines)
    if verb == "show":
        return _card(answer)
    return json.dumps(answer, indent=2)


def _card(answer: dict[str, Any]) -> str:
    model = answer["model"]
    lines = [f"Model:       {model['name']} (id {model['id']}, {model.get('state', '')})"]
    for label, field_name in (
        ("Description", "description"),
        ("License", "license"),
        ("Maturity", "maturity"),
        ("Owner", "owner"),
    ):
        if model.get(field_name):
            lines.append(f"{label + ':':<12} {model[field_name]}")
    if model.get("tasks"):
        lines.append(f"{'Tasks:':<12} {', '.join(model['tasks'])}")
    if "versions" in answer:
        names = ", ".join(v["name"] for v in answer["versions"]) or "none"
        lines.append(f"{'Versions:':<12} {names}")
    if "version" in answer:
        version, artifact = answer["version"], answer.get("artifact") or {}
        lines.append(f"{'Version:':<12} {version['name']} (id {version['id']})")
        lines.append(f"{'URI:':<12} {artifact.get('uri', '(no model artifact)')}")
        if artifact.get("modelFormatName"):
            lines.append(f"{'Format:':<12} {artifact['modelFormatName']}")
        for key, value in sorted((version.get("customProperties") or {}).items()):
            shown = next((v for k, v in value.items() if k != "metadataType"), "")
            lines.append(f"{'Metric:':<12} {key} = {shown}")
    if model.get("readme"):
        lines.extend(["", str(model["readme"]).rstrip()])
    return "\n".join(lines)
