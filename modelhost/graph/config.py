"""The router process's configuration: the graph it runs, and where each of its services is.

``modelhost graph --spec`` reads it, inline JSON or a JSON or YAML file; the platform writes it
(:func:`modelhost.control.graph_plan.graph_router_config`), as KServe's controller passes its
router the graph with every ``serviceName`` already resolved. Its shape::

    {"graph": {<an InferenceGraph, as control.to_dict writes it>},
     "services": {"<serviceName>": {"host": "<ingress host>",
                                    "address": "<in-cluster host[:port]>",
                                    "protocol": "v1", "protocols": ["v1", "v2"],
                                    "model": "<model name in the predict path>"}}}

The graph is parsed, defaulted and validated as at admission; any problem is a
:class:`~modelhost.control.errors.ParseError` or ``ValidationError`` naming its field
(``services.iris.protocol``, ``graph.spec.nodes.root.steps[0].weight``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import orjson
import yaml

from modelhost.control import (
    FieldError,
    InferenceGraph,
    ParseError,
    ValidationError,
    apply_graph_defaults,
    parse_object,
    validate_inference_graph,
)
from modelhost.graph.resolve import PROTOCOLS

__all__ = ["RouterConfig", "ServiceEntry", "load_router_config", "parse_router_config"]

_SUBJECT = "router config"
_SECTIONS = ("graph", "services")
# msgspec's "... - at `$.host`" suffix: where in the decoded value the problem is.
_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<at>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")


class ServiceEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the router reaches one InferenceService, and which predict paths it answers.

    ``protocol`` is the service's planned protocol (the path used when the graph's request
    names none); ``protocols`` every protocol its server answers (default: ``protocol``).
    """

    host: str
    address: str
    protocol: str
    model: str
    protocols: tuple[str, ...] = ()

    def speaks(self, protocol: str) -> bool:
        return protocol in (self.protocols or (self.protocol,))


class RouterConfig(msgspec.Struct, frozen=True):
    """The graph (defaulted and validated) and the services deployed now, by name."""

    graph: InferenceGraph
    services: Mapping[str, ServiceEntry]


def load_router_config(spec: str) -> RouterConfig:
    """``--spec``: inline JSON (it starts with ``{``), or the path of a JSON or YAML file."""
    if spec.lstrip().startswith("{"):
        return parse_router_config(_decode(spec, "--spec"))
    path = Path(spec).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ParseError([FieldError("", f"cannot read {path}: {reason}")], _SUBJECT) from None
    return parse_router_config(_decode(text, str(path)))


def parse_router_config(document: Any) -> RouterConfig:
    """A decoded config → :class:`RouterConfig`; every problem names its field."""
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ParseError([FieldError("", f"expected a mapping, got {kind}")], _SUBJECT)
    unknown = [key for key in document if key not in _SECTIONS]
    if unknown:
        raise ParseError(
            [FieldError(str(unknown[0]), "unknown field (the config has graph and services)")],
            _SUBJECT,
        )
    if "graph" not in document:
        raise ParseError([FieldError("graph", "required field is missing")], _SUBJECT)
    graph = _parse_graph(document["graph"])
    services = _parse_services(document.get("services") or {})
    return RouterConfig(graph=graph, services=services)


def _decode(text: str, source: str) -> Any:
    """JSON when the text is a JSON object (the platform's), else YAML."""
    if text.lstrip().startswith("{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            problem = FieldError("", f"{source} is not valid JSON: {exc}")
            raise ParseError([problem], _SUBJECT) from None
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        problem = FieldError("", f"{source} is not valid YAML: {exc}")
        raise ParseError([problem], _SUBJECT) from None


def _parse_graph(document: Any) -> InferenceGraph:
    try:
        parsed = parse_object(document)
        if not isinstance(parsed, InferenceGraph):
            raise ParseError([FieldError("kind", f"expected InferenceGraph, got {parsed.kind}")])
        graph = apply_graph_defaults(parsed)
        validate_inference_graph(graph)
    except ValidationError as exc:
        # The same problems, with their fields placed in the config.
        located = [FieldError(_join("graph", error.field), error.message) for error in exc.errors]
        raise ParseError(located, _SUBJECT) from None
    return graph


def _parse_services(document: Any) -> dict[str, ServiceEntry]:
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ParseError([FieldError("services", f"expected a mapping, got {kind}")], _SUBJECT)
    services: dict[str, ServiceEntry] = {}
    problems: list[FieldError] = []
    for name, entry in document.items():
        where = f"services.{name}"
        try:
            service = msgspec.convert(entry, ServiceEntry, strict=True)
        except msgspec.ValidationError as exc:
            problems.append(_entry_error(where, str(exc)))
            continue
        problems.extend(_entry_problems(where, service))
        services[str(name)] = service
    if problems:
        raise ParseError(problems, _SUBJECT)
    return services


def _entry_problems(where: str, service: ServiceEntry) -> list[FieldError]:
    problems = []
    if service.protocol not in PROTOCOLS:
        problems.append(
            FieldError(f"{where}.protocol", f"expected v1 or v2, got {service.protocol!r}")
        )
    for index, protocol in enumerate(service.protocols):
        if protocol not in PROTOCOLS:
            problems.append(
                FieldError(f"{where}.protocols[{index}]", f"expected v1 or v2, got {protocol!r}")
            )
    if service.protocols and service.protocol not in service.protocols:
        problems.append(
            FieldError(f"{where}.protocols", f"does not list the service's {service.protocol}")
        )
    for field, value in (("host", service.host), ("address", service.address)):
        if not value or "/" in value or any(c.isspace() for c in value):
            problems.append(FieldError(f"{where}.{field}", f"expected host[:port], got {value!r}"))
    if not service.model or "/" in service.model:
        problems.append(FieldError(f"{where}.model", f"not a model name: {service.model!r}"))
    return problems


def _entry_error(where: str, text: str) -> FieldError:
    """msgspec's message about one entry → its field in the config, in plain words."""
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    message, at = match["text"], match["at"] or ""
    named = _NAMED_FIELD.match(message)
    expected = _EXPECTED.match(message)
    if expected is not None:
        message = f"expected {expected['want'].replace('`', '')}, got {expected['got']}"
    elif named is not None:
        at = f"{at}.{named['name']}"
        message = (
            "required field is missing"
            if "missing" in message
            else "unknown field (host, address, protocol, protocols, model)"
        )
    return FieldError(f"{where}{at}", message)


def _join(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if field else prefix
