"""Every rendered object validates: built-in kinds against Kubernetes' own schemas, strictly.

The built-in kinds go through ``kubernetes_validate`` at the newest Kubernetes version it
ships (1.37.0 with kubernetes-validate 1.37.0), in strict mode (unknown fields are errors).
HTTPRoute and ScaledObject are checked against the schemas in ``schemas/`` (see its
README: written from the Gateway API and KEDA sources, since neither CRD could be obtained
offline), plus the Gateway API CEL rule those schemas cannot say.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from kubernetes_validate.utils import latest_version
from render_support import RENDERABLE, render_file, schema_validator, validate_manifest


def test_the_newest_kubernetes_version_is_used() -> None:
    major, minor, _ = (int(part) for part in latest_version().split("."))
    assert (major, minor) >= (1, 37)


@pytest.mark.parametrize("path", RENDERABLE, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_rendered_object_validates(path: Path) -> None:
    manifests = render_file(path)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "HTTPRoute"} <= kinds
    for manifest in manifests:
        validate_manifest(manifest)


def test_the_custom_schemas_reject_what_the_crds_reject() -> None:
    """The hand-written schemas are not vacuous: a few errors the CRDs refuse."""
    (route,) = [m for m in render_file(RENDERABLE[0]) if m["kind"] == "HTTPRoute"][:1]
    bad_timeout = json.loads(json.dumps(route))
    bad_timeout["spec"]["rules"][0]["timeouts"]["request"] = "5 minutes"
    bad_weight = json.loads(json.dumps(route))
    bad_weight["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    unknown = json.loads(json.dumps(route))
    unknown["spec"]["rules"][0]["backendRef"] = []
    for invalid in (bad_timeout, bad_weight, unknown):
        with pytest.raises(jsonschema.ValidationError):
            schema_validator("HTTPRoute").validate(invalid)
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "cpu"}]},
    }
    with pytest.raises(jsonschema.ValidationError):  # a trigger needs its metadata
        schema_validator("ScaledObject").validate(scaled)
