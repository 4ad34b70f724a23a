"""Rendering KServe's samples for the render tests: plans from files, manifests by kind.

``validate_manifest`` is the schema check every rendered object passes (see
test_render_validate.py for the versions and schemas).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import latest_version

from modelhost import control
from modelhost.control.objects import ApiObject
from modelhost.kube import KubeSettings, render_plan

SAMPLES = Path(__file__).parent / "samples"
SCHEMAS = Path(__file__).parent / "schemas"
CUSTOM_SCHEMAS = {
    "HTTPRoute": "gateway.networking.k8s.io_v1_httproute.json",
    "ScaledObject": "keda.sh_v1alpha1_scaledobject.json",
}
CONTROL_SAMPLES = Path(__file__).parent.parent / "control" / "samples"
# The README's Kubernetes sample.
README_SAMPLE = Path(__file__).parents[2] / "examples" / "kubernetes-sklearn-iris.yaml"
# KServe's samples that render (the ones in tests/control/samples and the README's included).
RENDERABLE = sorted(
    [p for p in SAMPLES.glob("*.yaml") if p.stem != "tensorflow"]
    + list(CONTROL_SAMPLES.glob("*.yaml"))
    + [README_SAMPLE],
    key=lambda p: (p.parent.name, p.name),
)
# KServe's four graph shapes, each with the InferenceServices it calls (or without them).
GRAPH_SAMPLES = sorted((CONTROL_SAMPLES / "graphs").glob("*.yaml"))

Manifest = dict[str, Any]


def objects(path: Path) -> list[ApiObject]:
    return control.parse_documents(path.read_text(), path.name)


def plan_file(path: Path, config: control.PlatformConfig | None = None) -> control.ServicePlan:
    """The plan of the file's one InferenceService, with the file's runtimes first.

    ``config`` defaults to the Kubernetes executor's (``KubeSettings().planner``).
    """
    found = objects(path)
    runtimes = [o for o in found if not isinstance(o, control.InferenceService)]
    (isvc,) = [o for o in found if isinstance(o, control.InferenceService)]
    config = config or KubeSettings().planner
    return control.plan(isvc, [*runtimes, *control.builtin_runtimes()], config=config)


def plan_graph_file(
    path: Path, config: control.PlatformConfig | None = None
) -> tuple[control.ServicePlan, dict[str, control.ServicePlan]]:
    """The plan of the file's one InferenceGraph, and of the file's InferenceServices (by name).

    ``config`` defaults to the Kubernetes executor's (``KubeSettings().planner``).
    """
    found = objects(path)
    config = config or KubeSettings().planner
    runtimes = [*control.builtin_runtimes()]
    services = {
        o.name: control.plan(o, runtimes, config=config)
        for o in found
        if isinstance(o, control.InferenceService)
    }
    (graph,) = [o for o in found if isinstance(o, control.InferenceGraph)]
    return control.plan_graph(graph, services, config=config), services


def render_graph_file(path: Path, settings: KubeSettings | None = None) -> list[Manifest]:
    """The manifests of the file's InferenceGraph (its router), not of its services."""
    settings = settings or KubeSettings()
    plan, _ = plan_graph_file(path, settings.planner)
    return render_plan(plan, settings)


def render_file(path: Path, settings: KubeSettings | None = None) -> list[Manifest]:
    settings = settings or KubeSettings()
    return render_plan(plan_file(path, settings.planner), settings)


def sample(name: str) -> Path:
    path = SAMPLES / name
    return path if path.exists() else CONTROL_SAMPLES / name


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def container(deployment: Manifest, name: str = "kserve-container") -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found  # type: ignore[no-any-return]


@cache
def schema_validator(kind: str) -> jsonschema.protocols.Validator:
    """The JSON-schema validator of a custom resource kind, from ``schemas/``."""
    schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[kind]).read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def validate_manifest(manifest: Manifest) -> None:
    """Raise unless ``manifest`` validates: built-in kinds strictly, at the newest version."""
    kind = manifest["kind"]
    if kind in CUSTOM_SCHEMAS:
        schema_validator(kind).validate(manifest)
        if kind == "HTTPRoute":
            _check_route_rules(manifest)
    else:
        kubernetes_validate.validate(manifest, latest_version(), strict=True)


def _check_route_rules(route: Manifest) -> None:
    """The CRD's CEL rule: a Service backend names its port."""
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service":
                assert "port" in ref, ref
