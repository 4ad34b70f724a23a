"""The operator's install manifests (deploy/kubernetes/operator): valid, consistent with the code.

Built-in kinds validate with kubernetes-validate against the newest Kubernetes version it
knows; the ClusterKopfPeering against the CRD shipped beside it. KServe's CRDs are remote
resources (a KServe release's files), checked by name only: there is no network here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelhost._version import __version__
from modelhost.cli import build_parser
from modelhost.kube.client import RESOURCES
from modelhost.kube.operator import OWNED_KINDS

BASE = Path(__file__).parents[2] / "deploy" / "kubernetes" / "operator"
KSERVE_CRD = re.compile(
    r"^https://raw\.githubusercontent\.com/kserve/kserve/v\d+\.\d+\.\d+/config/crd/full/"
    r"serving\.kserve\.io_(?P<plural>[a-z]+)\.yaml$"
)


def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return document


def local_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for resource in kustomization()["resources"]:
        if resource.startswith("https://"):
            continue
        documents.extend(d for d in yaml.safe_load_all((BASE / resource).read_text()) if d)
    return documents


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in local_documents() if d["kind"] == kind]
    return found


def test_kserves_crds_are_referenced_from_a_release_not_copied() -> None:
    remote = [r for r in kustomization()["resources"] if r.startswith("https://")]
    plurals = set()
    for url in remote:
        match = KSERVE_CRD.match(url)
        assert match, f"not a KServe release's CRD file: {url}"
        plurals.add(match["plural"])
    assert plurals == {
        "inferenceservices",
        "inferencegraphs",
        "servingruntimes",
        "clusterservingruntimes",
    }
    local = {
        d["metadata"]["name"] for d in local_documents() if d["kind"] == "CustomResourceDefinition"
    }
    assert not any(name.endswith(".serving.kserve.io") for name in local)


@pytest.mark.parametrize(
    "document",
    [d for d in local_documents() if d["apiVersion"] != "kopf.dev/v1"],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_every_built_in_kind_validates(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_peering_object_fits_the_peering_crd_and_the_operators_flag() -> None:
    crd = next(
        d
        for d in local_documents()
        if d["kind"] == "CustomResourceDefinition"
        and d["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    )
    peering = one("ClusterKopfPeering")
    jsonschema.validate(peering, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    args = build_parser().parse_args(
        one("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert args.command == "operator"
    assert args.peering == peering["metadata"]["name"]
    assert not args.namespaces  # all namespaces: the ClusterKopfPeering is the one used


def test_the_operator_runs_this_versions_image_as_a_non_root_user() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"modelhost/modelhost-tabular:{__version__}"
    assert kustomization()["images"] == [
        {"name": "modelhost/modelhost-tabular", "newTag": __version__}
    ]
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    liveness = build_parser().parse_args(container["args"]).liveness
    assert liveness.endswith(container["livenessProbe"]["httpGet"]["path"])


def rules() -> list[dict[str, Any]]:
    role = one("ClusterRole")
    binding = one("ClusterRoleBinding")
    account = one("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    found: list[dict[str, Any]] = role["rules"]
    return found


def verbs(group: str, resource: str) -> set[str]:
    granted: set[str] = set()
    for rule in rules():
        if group in rule["apiGroups"] and resource in rule["resources"]:
            granted.update(rule["verbs"])
    return granted


def test_rbac_grants_what_the_operator_does_and_no_more() -> None:
    for resource in RESOURCES:
        if resource.kind in OWNED_KINDS:
            wanted = {"list", "create", "patch", "delete"}
            if resource.kind == "Deployment":
                wanted.add("watch")  # their status changes reach the owner's status
            assert verbs(resource.group, resource.plural) == wanted, resource.kind
    assert verbs("serving.kserve.io", "inferenceservices") == {"get", "list", "watch", "patch"}
    assert verbs("serving.kserve.io", "inferenceservices/status") == {"patch"}
    assert verbs("serving.kserve.io", "inferencegraphs") == {"get", "list", "watch", "patch"}
    assert verbs("serving.kserve.io", "inferencegraphs/status") == {"patch"}
    assert verbs("serving.kserve.io", "servingruntimes") == {"list", "watch"}
    assert verbs("serving.kserve.io", "clusterservingruntimes") == {"list", "watch"}
    assert verbs("", "pods") == {"list", "watch"}
    granted = {verb for rule in rules() for verb in rule["verbs"]}
    assert "update" not in granted
    assert "*" not in granted
    assert not any(
        resource in ("secrets", "*") for rule in rules() for resource in rule["resources"]
    )
