"""The operator's InferenceGraphs against an emulated API server: router, status, services, delete.

kmock stands in for the kube-apiserver (none can run here) and a test plays the Deployment
controller by writing a Deployment's status, as in ``test_operator``; see
``test_operator_harness``. The router's pods are not run (no kubelet): what is checked is
what the operator applies and the status it writes, which must fit the status schema of
KServe's InferenceGraph CRD (``../shared/reference/kserve-crds``) with unknown fields refused:
the API server would prune them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_operator_harness import (
    ApiServer,
    Cluster,
    cluster,
    graph_document,
    isvc_document,
    no_leaked_tasks,
    running_operator,
    until,
)

from modelhost import control
from modelhost.kube import KubeSettings, render_plan
from modelhost.kube.labels import INFERENCEGRAPH, INFERENCESERVICE

pytestmark = [pytest.mark.kmock(cls=ApiServer), pytest.mark.looptime]
__all__ = ["cluster", "no_leaked_tasks"]  # fixtures, used by name

GRAPH = ("serving.kserve.io/v1alpha1", "InferenceGraph")
ISVC = ("serving.kserve.io/v1beta1", "InferenceService")
OWNED = (
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "PodDisruptionBudget",
    "HTTPRoute",
)
# The shared reference data sits next to the repository, here and in CI.
CRD_FILE = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / "kserve-crds"
    / "serving.kserve.io_inferencegraphs.yaml"
)
SEQUENCE = {
    "root": {
        "routerType": "Sequence",
        "steps": [
            {"serviceName": "sklearn-iris", "name": "sklearn-iris"},
            {"serviceName": "xgboost-iris", "name": "xgboost-iris", "data": "$request"},
        ],
    }
}


def model(framework: str) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": framework}, "storageUri": f"gs://bucket/{framework}"}}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown fields refused where it does not keep them."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    return out


def check_status_schema(status: dict[str, Any]) -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    jsonschema.validate(status, strict(schema))


def graph_status(cluster: Cluster, name: str = "chain") -> dict[str, Any]:
    graph = cluster.get(*GRAPH, "ns", name) or {}
    return dict(graph.get("status") or {})


def condition(cluster: Cluster, kind: str = "Ready", name: str = "chain") -> dict[str, Any]:
    found = graph_status(cluster, name).get("conditions") or []
    return next((c for c in found if c["type"] == kind), {})


def routers(cluster: Cluster, graph: str = "chain") -> list[dict[str, Any]]:
    """The router Deployments of ``graph``, oldest name first."""
    return [
        d for d in cluster.all("Deployment") if d["metadata"]["labels"].get(INFERENCEGRAPH) == graph
    ]


def graph_objects(cluster: Cluster, graph: str = "chain") -> list[dict[str, Any]]:
    return [
        obj
        for kind in OWNED
        for obj in cluster.all(kind)
        if obj["metadata"]["labels"].get(INFERENCEGRAPH) == graph
    ]


def router_config(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    config: dict[str, Any] = json.loads(args[args.index("--spec") + 1])
    return config


def route_backends(cluster: Cluster, graph: str = "chain") -> list[str]:
    route = cluster.get("gateway.networking.k8s.io/v1", "HTTPRoute", "ns", graph) or {}
    rules = (route.get("spec") or {}).get("rules") or [{"backendRefs": []}]
    return [ref["name"] for ref in rules[0]["backendRefs"]]


def newest_router(cluster: Cluster, services: set[str]) -> str | None:
    """The router Deployment whose config knows exactly ``services``, if it is there yet."""
    for deployment in routers(cluster):
        if set(router_config(deployment)["services"]) == services:
            return str(deployment["metadata"]["name"])
    return None


async def test_a_graph_becomes_its_router_owned_by_it_and_waits_for_its_services(
    cluster: Cluster,
) -> None:
    document = graph_document(SEQUENCE)
    async with running_operator(cluster):
        created = await cluster.create(document)
        graph = control.parse_object(document)
        assert isinstance(graph, control.InferenceGraph)
        expected = render_plan(control.plan_graph(graph, {}), KubeSettings())
        await until(lambda: len(graph_objects(cluster)) >= len(expected), what="the objects")
        await until(lambda: condition(cluster), what="a status")
        ready = condition(cluster)
        assert (ready["status"], ready["reason"]) == ("False", "RevisionMissing")
        (router,) = routers(cluster)
        await cluster.make_available(router["metadata"]["name"])
        await until(lambda: condition(cluster).get("reason") == "ServicesNotFound")
    for manifest in expected:
        meta = manifest["metadata"]
        live = cluster.get(manifest["apiVersion"], manifest["kind"], "ns", meta["name"])
        assert live is not None, f"{manifest['kind']} {meta['name']} was not created"
        assert live["metadata"].pop("ownerReferences") == [
            {
                "apiVersion": "serving.kserve.io/v1alpha1",
                "kind": "InferenceGraph",
                "name": "chain",
                "uid": created["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp"):
            live["metadata"].pop(field)
        live.pop("status", None)  # what the test wrote as the Deployment controller
        assert live == manifest
    assert {m["kind"] for m in expected} >= {"Deployment", "Service", "HTTPRoute"}
    assert all(INFERENCESERVICE not in m["metadata"]["labels"] for m in expected)
    status = graph_status(cluster)
    assert status["url"] == "http://chain.ns.example.com"
    assert status["deploymentMode"] == "Knative"
    assert status["observedGeneration"] == 1
    ready = condition(cluster)
    assert ready["status"] == "False"
    assert ready["message"] == (
        "waiting for InferenceServices sklearn-iris, xgboost-iris (not found in namespace ns)"
    )
    assert condition(cluster, "LatestDeploymentReady")["status"] == "True"
    check_status_schema(status)


async def test_services_that_come_and_go_roll_the_router_without_a_gap(cluster: Cluster) -> None:
    async with running_operator(cluster):
        await cluster.create(graph_document(SEQUENCE))
        first = await until(lambda: newest_router(cluster, set()), what="the first router")
        await cluster.make_available(first)
        await until(lambda: condition(cluster).get("reason") == "ServicesNotFound")

        # A service the graph names appears: a new router revision knows where it is.
        await cluster.create(isvc_document(model("sklearn"), name="sklearn-iris"))
        second = await until(
            lambda: newest_router(cluster, {"sklearn-iris"}), what="a router for sklearn-iris"
        )
        entry = router_config(cluster.get("apps/v1", "Deployment", "ns", second))["services"]
        assert entry["sklearn-iris"]["address"] == "sklearn-iris.ns.svc.cluster.local"
        assert entry["sklearn-iris"]["host"] == "sklearn-iris.ns.example.com"
        # The new revision is not ready: the graph keeps answering through the first one.
        await until(lambda: condition(cluster, "LatestDeploymentReady").get("status") == "False")
        assert route_backends(cluster) == [first]
        assert {d["metadata"]["name"] for d in routers(cluster)} == {first, second}

        await cluster.make_available(second)
        await until(lambda: route_backends(cluster) == [second], what="the route to the new one")
        await until(lambda: cluster.get("apps/v1", "Deployment", "ns", first) is None)
        assert cluster.get("v1", "Service", "ns", first) is None  # its revision Service too
        assert condition(cluster)["message"] == (
            "waiting for InferenceService xgboost-iris (not found in namespace ns)"
        )

        await cluster.create(isvc_document(model("xgboost"), name="xgboost-iris"))
        both = {"sklearn-iris", "xgboost-iris"}
        third = await until(lambda: newest_router(cluster, both), what="a router for both")
        await cluster.make_available(third)
        await until(lambda: condition(cluster).get("status") == "True", what="Ready")
        assert route_backends(cluster) == [third]

        # A service that goes: the graph waits for it again, and says so. The router's
        # config is the second one's again, and so is its revision (named by its digest).
        await cluster.delete(*ISVC, "ns", "xgboost-iris")
        fourth = await until(
            lambda: newest_router(cluster, {"sklearn-iris"}), what="a router without xgboost"
        )
        assert fourth == second
        assert route_backends(cluster) == [third]  # until the new one is ready
        assert condition(cluster)["status"] == "True"  # the serving router knows both
        await cluster.make_available(fourth)
        await until(lambda: condition(cluster).get("reason") == "ServicesNotFound")
        assert "xgboost-iris" in condition(cluster)["message"]


async def test_a_services_spec_change_reaches_the_router(cluster: Cluster) -> None:
    graph = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "sklearn-iris"}]}}
    async with running_operator(cluster):
        await cluster.create(isvc_document(model("sklearn"), name="sklearn-iris"))
        await cluster.create(graph_document(graph))
        first = await until(lambda: newest_router(cluster, {"sklearn-iris"}), what="a router")
        config = router_config(cluster.get("apps/v1", "Deployment", "ns", first))
        assert config["services"]["sklearn-iris"]["protocol"] == "v1"
        await cluster.patch(
            *ISVC,
            "ns",
            "sklearn-iris",
            {"spec": {"predictor": {"model": {"protocolVersion": "v2"}}}},
        )

        def protocols() -> set[str]:
            return {
                router_config(d)["services"]["sklearn-iris"]["protocol"] for d in routers(cluster)
            }

        await until(lambda: "v2" in protocols(), what="a router speaking v2 to the service")


async def test_an_invalid_graph_is_refused_with_the_field_and_nothing_is_made(
    cluster: Cluster,
) -> None:
    nodes = {"root": {"routerType": "Sequence", "steps": [{"nodeName": "missing"}]}}
    async with running_operator(cluster):
        await cluster.create(graph_document(nodes))
        await until(lambda: condition(cluster), what="a status")
    ready = condition(cluster)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.nodes.root.steps[0].nodeName" in ready["message"]
    assert graph_objects(cluster) == []
    check_status_schema(graph_status(cluster))


async def test_deleting_a_graph_deletes_its_router_and_nothing_else(cluster: Cluster) -> None:
    graph = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "sklearn-iris"}]}}
    async with running_operator(cluster):
        await cluster.create(isvc_document(model("sklearn"), name="sklearn-iris"))
        await cluster.create(graph_document(graph))
        await until(lambda: newest_router(cluster, {"sklearn-iris"}), what="a router")
        await until(lambda: cluster.get("gateway.networking.k8s.io/v1", "HTTPRoute", "ns", "chain"))
        services_objects = [
            o
            for kind in OWNED
            for o in cluster.all(kind)
            if INFERENCEGRAPH not in o["metadata"]["labels"]
        ]
        assert services_objects  # the InferenceService's own
        await cluster.delete(*GRAPH, "ns", "chain")
        await until(lambda: not graph_objects(cluster), what="the router's objects to go")
    left = [o for kind in OWNED for o in cluster.all(kind)]
    assert {o["metadata"]["name"] for o in left} == {
        o["metadata"]["name"] for o in services_objects
    }
