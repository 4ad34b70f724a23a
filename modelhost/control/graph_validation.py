"""KServe's admission of InferenceGraphs (its defaulter and validator) and what a graph waits for.

KServe's webhook (``inference_graph_validation.go``) checks the name, the ``root`` node, unique
step names, one target per step and Splitter weights adding up to 100, and defaults only
``minReplicas`` (``inference_graph_defaults.go``). modelhost refuses more at admission, where
KServe's router would misbehave at request time: a ``nodeName`` naming no node, nodes that call
each other in a cycle (KServe's router recurses until the request fails), ``data`` other than
``$request``/``$response`` (KServe silently sends the original request), a ``weight`` outside a
Splitter or a ``condition`` outside Switch and Sequence (ignored by KServe), and non-positive
router timeouts. Every problem is reported at once, each with its field path
(``spec.nodes.root.steps[1].weight``).

A graph whose steps name InferenceServices that do not exist yet is valid: it waits for them,
as KServe's controller does; :func:`graph_wait_reason` says for which.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection, Iterator

from modelhost.control.defaults import clone
from modelhost.control.errors import FieldError, ValidationError
from modelhost.control.gjson import ConditionError, compile_condition
from modelhost.control.names import (
    DEPLOYMENT_MODE_ANNOTATION,
    LEGACY_DEPLOYMENT_MODES,
    normalize_mode,
)
from modelhost.control.objects.inference_graph import (
    DEPENDENCIES,
    REQUEST_DATA,
    RESPONSE_DATA,
    ROOT_NODE,
    ROUTER_TYPES,
    InferenceGraph,
    InferenceRouter,
    InferenceStep,
)

__all__ = [
    "GRAPH_NAME_PATTERN",
    "apply_graph_defaults",
    "graph_cycles",
    "graph_services",
    "graph_wait_reason",
    "inference_graph_errors",
    "validate_inference_graph",
]

# KServe's GraphRegexp, which is also its InferenceService name rule (a step's serviceName).
# The graph's name also names the router's Deployment and Service, so 63 characters at most.
GRAPH_NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NAME_LIMIT = 63
_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A graph's router runs as a Deployment or a Knative Service; ModelMesh has no graphs.
_GRAPH_MODES = ("Standard", "Knative")
# The scale metrics of the CRD's enum.
_SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
_TARGET_FIELDS = ("nodeName", "serviceName", "serviceUrl")
_TIMEOUT_FIELDS = (
    ("serverRead", "server_read"),
    ("serverWrite", "server_write"),
    ("serverIdle", "server_idle"),
    ("serviceClient", "service_client"),
)
# Where a step's field means something: a weight to a Splitter, a condition to these two.
_WEIGHTED = ("Splitter",)
_CONDITIONAL = ("Switch", "Sequence")
# KServe's default for minReplicas (constants.DefaultMinReplicas).
_DEFAULT_MIN_REPLICAS = 1


def apply_graph_defaults(graph: InferenceGraph) -> InferenceGraph:
    """A defaulted copy of ``graph``, as KServe's webhook stores it: ``minReplicas`` 1.

    KServe leaves ``maxReplicas``, ``scaleMetric``, ``timeout``, a step's ``data`` and its
    ``dependency`` unset (their meaning depends on the mode or is the router's), and so does
    this; :attr:`InferenceStep.data_source` and :attr:`InferenceStep.hard` read them.
    """
    result: InferenceGraph = clone(graph)
    if result.metadata.namespace is None:
        result.metadata.namespace = "default"
    if result.spec.min_replicas is None:
        result.spec.min_replicas = _DEFAULT_MIN_REPLICAS
    return result


def validate_inference_graph(graph: InferenceGraph) -> None:
    """Raise :class:`ValidationError` listing every problem of an InferenceGraph."""
    errors = inference_graph_errors(graph)
    if errors:
        raise ValidationError(errors, f"InferenceGraph {graph.namespace}/{graph.name}")


def inference_graph_errors(graph: InferenceGraph) -> list[FieldError]:
    errors = list(_metadata_errors(graph))
    nodes = graph.spec.nodes
    if ROOT_NODE not in nodes:
        errors.append(
            FieldError(
                "spec.nodes",
                "root node not found, InferenceGraph needs a node with name 'root' as the "
                f"root node of the graph (nodes: {_listed(nodes)})",
            )
        )
    for node_name, node in nodes.items():
        errors.extend(_node_errors(graph, node_name, node))
    for cycle, field in graph_cycles(graph):
        errors.append(FieldError(field, f"the nodes call each other in a cycle: {cycle}"))
    errors.extend(_scaling_errors(graph))
    return errors


def graph_cycles(graph: InferenceGraph) -> list[tuple[str, str]]:
    """Every cycle of ``nodeName`` steps found, as ``("root -> a -> root", field path)``.

    The field is the ``nodeName`` of the step that closes the cycle. The search starts at
    ``root``, then the other nodes in order, so a cycle is written from where a request
    enters it; each closing step is reported once.
    """
    nodes = graph.spec.nodes
    done: set[str] = set()
    cycles: list[tuple[str, str]] = []
    starts = ([ROOT_NODE] if ROOT_NODE in nodes else []) + [n for n in nodes if n != ROOT_NODE]
    for start in starts:
        if start in done:
            continue
        # Depth first without recursion: a long chain of nodes must not exhaust the stack.
        path = [start]
        pending = [iter(enumerate(nodes[start].steps or ()))]
        while pending:
            name = path[-1]
            for index, step in pending[-1]:
                target = step.node_name
                if not target or target not in nodes or target in done:
                    continue
                if target in path:
                    loop = [*path[path.index(target) :], target]
                    field = f"spec.nodes.{name}.steps[{index}].nodeName"
                    cycles.append((" -> ".join(loop), field))
                    continue
                path.append(target)
                pending.append(iter(enumerate(nodes[target].steps or ())))
                break
            else:
                pending.pop()
                done.add(path.pop())
    return cycles


def graph_services(graph: InferenceGraph) -> list[str]:
    """The InferenceServices the graph's steps name (``serviceName``), each once, in order.

    Every node counts, reachable from ``root`` or not, as KServe's controller resolves them all.
    """
    names: dict[str, None] = {}
    for node in graph.spec.nodes.values():
        for step in node.steps or ():
            if step.service_name:
                names.setdefault(step.service_name, None)
    return list(names)


def graph_wait_reason(graph: InferenceGraph, existing: Collection[str]) -> str | None:
    """Why the graph cannot run yet: the InferenceServices it names that are not in ``existing``.

    ``existing`` holds the names of the InferenceServices in the graph's namespace. ``None``
    when every one exists; else a status message naming the missing ones.
    """
    missing = [name for name in graph_services(graph) if name not in existing]
    if not missing:
        return None
    noun = "InferenceService" if len(missing) == 1 else "InferenceServices"
    return f"waiting for {noun} {', '.join(missing)} (not found in namespace {graph.namespace})"


def _metadata_errors(graph: InferenceGraph) -> Iterator[FieldError]:
    name = graph.metadata.name
    if not name:
        yield FieldError("metadata.name", "required")
    elif not GRAPH_NAME_PATTERN.match(name):
        yield FieldError(
            "metadata.name",
            f'The InferenceGraph "{name}" is invalid: a InferenceGraph name must consist of lower '
            "case alphanumeric characters or '-', and must start with alphabetical character. "
            '(e.g. "my-name" or "abc-123", regex used for validation is '
            f"'{GRAPH_NAME_PATTERN.pattern[1:-1]}')",
        )
    elif len(name) > _NAME_LIMIT:
        yield FieldError("metadata.name", f"must be no more than {_NAME_LIMIT} characters")
    namespace = graph.namespace
    if not _NAMESPACE_PATTERN.match(namespace) or len(namespace) > _NAME_LIMIT:
        yield FieldError("metadata.namespace", f"{namespace!r} is not a valid namespace name")
    mode = graph.annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    field = f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]"
    if mode is not None and normalize_mode(mode) not in _GRAPH_MODES:
        known = ", ".join((*_GRAPH_MODES, *LEGACY_DEPLOYMENT_MODES))
        yield FieldError(field, f"{mode!r} is not a deployment mode of graphs: one of {known}")


def _node_errors(
    graph: InferenceGraph, node_name: str, node: InferenceRouter
) -> Iterator[FieldError]:
    field = f"spec.nodes.{node_name}"
    router_type = node.router_type
    if router_type not in ROUTER_TYPES:
        yield FieldError(
            f"{field}.routerType",
            f"unknown router type {router_type!r}: must be one of {', '.join(ROUTER_TYPES)}",
        )
    steps = node.steps or []
    if not steps:
        yield FieldError(f"{field}.steps", f"a {router_type} node needs at least one step")
    seen: set[str] = set()
    for index, step in enumerate(steps):
        path = f"{field}.steps[{index}]"
        if step.name:
            if step.name in seen:
                yield FieldError(
                    f"{path}.name",
                    f'Node "{node_name}" of InferenceGraph "{graph.name}" contains more than one '
                    f'step with name "{step.name}"',
                )
            seen.add(step.name)
        yield from _target_errors(graph, path, step)
        yield from _step_field_errors(path, router_type, step)
    if router_type in _WEIGHTED and steps and all(step.weight is not None for step in steps):
        total = sum(step.weight or 0 for step in steps)
        if total != 100:
            yield FieldError(
                f"{field}.steps",
                f"the sum of traffic weights for all routing targets should be 100, not {total}",
            )


def _target_errors(graph: InferenceGraph, path: str, step: InferenceStep) -> Iterator[FieldError]:
    targets = step.targets
    if not targets:
        yield FieldError(
            path, f"does not specify an inference target: set one of {', '.join(_TARGET_FIELDS)}"
        )
    elif len(targets) > 1:
        yield FieldError(
            path,
            f"specifies more than one of {', '.join(_TARGET_FIELDS)} (found {', '.join(targets)})",
        )
    nodes = graph.spec.nodes
    if step.node_name and step.node_name not in nodes:
        yield FieldError(
            f"{path}.nodeName",
            f"no node named {step.node_name!r} in this graph (nodes: {_listed(nodes)})",
        )
    if step.service_name and not GRAPH_NAME_PATTERN.match(step.service_name):
        yield FieldError(
            f"{path}.serviceName",
            f"{step.service_name!r} is not an InferenceService name "
            f"(regex used for validation is '{GRAPH_NAME_PATTERN.pattern[1:-1]}')",
        )
    if step.service_url:
        url = urllib.parse.urlsplit(step.service_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            yield FieldError(
                f"{path}.serviceUrl",
                f"{step.service_url!r} is not an absolute http:// or https:// URL",
            )


def _step_field_errors(path: str, router_type: str, step: InferenceStep) -> Iterator[FieldError]:
    if step.data is not None and step.data not in (REQUEST_DATA, RESPONSE_DATA):
        yield FieldError(
            f"{path}.data", f"must be {REQUEST_DATA} or {RESPONSE_DATA}, not {step.data!r}"
        )
    if router_type in _WEIGHTED:
        if step.weight is None:
            yield FieldError(
                f"{path}.weight", f"required in a {router_type} node: every step needs a weight"
            )
        elif not 0 <= step.weight <= 100:
            yield FieldError(f"{path}.weight", f"must be between 0 and 100, not {step.weight}")
    elif step.weight is not None and router_type in ROUTER_TYPES:
        yield FieldError(
            f"{path}.weight", f"only a Splitter node uses weights; this is a {router_type} node"
        )
    if step.condition and router_type not in _CONDITIONAL and router_type in ROUTER_TYPES:
        yield FieldError(
            f"{path}.condition",
            f"only Switch and Sequence nodes use conditions; this is a {router_type} node",
        )
    if router_type == "Switch" and not step.condition:
        yield FieldError(
            f"{path}.condition", "required in a Switch node: a step without one never matches"
        )
    if step.condition and router_type in _CONDITIONAL:
        # Compiled now, so a condition the router cannot evaluate is refused at apply, not
        # on the first request that reaches the step.
        try:
            compile_condition(step.condition)
        except ConditionError as exc:
            yield FieldError(f"{path}.condition", str(exc))
    if step.dependency is not None and step.dependency not in DEPENDENCIES:
        yield FieldError(
            f"{path}.dependency",
            f"must be one of {', '.join(DEPENDENCIES)}, not {step.dependency!r}",
        )


def _scaling_errors(graph: InferenceGraph) -> Iterator[FieldError]:
    spec = graph.spec
    minimum, maximum = spec.min_replicas, spec.max_replicas
    if minimum is not None and minimum < 0:
        yield FieldError("spec.minReplicas", "MinReplicas cannot be less than 0.")
    if maximum is not None and maximum < 0:
        yield FieldError("spec.maxReplicas", "MaxReplicas cannot be less than 0.")
    effective_min = _DEFAULT_MIN_REPLICAS if minimum is None else minimum
    if maximum is not None and maximum > 0 and effective_min > maximum:
        yield FieldError("spec.minReplicas", "MinReplicas cannot be greater than MaxReplicas.")
    if spec.scale_target is not None and spec.scale_target < 1:
        yield FieldError("spec.scaleTarget", "must be at least 1")
    if spec.scale_metric is not None and spec.scale_metric not in _SCALE_METRICS:
        yield FieldError(
            "spec.scaleMetric",
            f"must be one of {', '.join(_SCALE_METRICS)}, not {spec.scale_metric!r}",
        )
    if spec.timeout is not None and spec.timeout < 0:
        yield FieldError("spec.timeout", "must be a number of seconds >= 0")
    timeouts = spec.router_timeouts
    for name, attribute in _TIMEOUT_FIELDS if timeouts is not None else ():
        value = getattr(timeouts, attribute)
        if value is not None and value <= 0:
            yield FieldError(
                f"spec.routerTimeouts.{name}", f"must be a positive number of seconds, not {value}"
            )


def _listed(nodes: Collection[str]) -> str:
    return ", ".join(nodes) if nodes else "none"
