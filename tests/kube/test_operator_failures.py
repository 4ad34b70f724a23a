"""The operator when the API server fails (409, 410, 500), when runtimes change, and peering.

kmock answers chosen requests with an error status (after storing what a create or patch
asked for, as kmock does: the answer is lost, not the change); the operator must retry with
back-off and converge. See ``test_operator_harness`` for the emulated cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest
from test_operator_harness import (
    ApiServer,
    Cluster,
    cluster,
    deployment_available,
    isvc_document,
    no_leaked_tasks,
    running_operator,
    until,
)

pytestmark = [pytest.mark.kmock(cls=ApiServer), pytest.mark.looptime]
__all__ = ["cluster", "no_leaked_tasks"]  # fixtures, used by name

ISVC = ("serving.kserve.io/v1beta1", "InferenceService")


def sklearn(uri: str = "gs://bucket/model-1", **fields: Any) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}, **fields}


def status_of(cluster: Cluster, name: str = "iris") -> dict[str, Any]:
    isvc = cluster.get(*ISVC, "ns", name) or {}
    return dict(isvc.get("status") or {})


def ready(cluster: Cluster, name: str = "iris") -> dict[str, Any]:
    conditions = status_of(cluster, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def test_errors_from_the_api_server_are_retried_with_back_off(cluster: Cluster) -> None:
    server = cluster.server
    deployments = kmock.resource("apps", "v1", "deployments")
    services = kmock.resource("", "v1", "services")
    isvcs = kmock.resource("serving.kserve.io", "v1beta1", "inferenceservices")
    # The first two creates of a Deployment fail (500; the object is stored all the same), the
    # first list of Services is a 410 Gone, the first status write a 409 Conflict.
    server[kmock.action.CREATE, deployments][:2] << 500
    server[kmock.action.LIST, services][:1] << 410
    server[kmock.action.UPDATE, isvcs, kmock.subresource("status")][:1] << 409
    loop = asyncio.get_running_loop()
    async with running_operator(cluster, retry_backoff_s=1.0):
        start = loop.time()
        await cluster.create(isvc_document(sklearn()))
        await until(lambda: ready(cluster), what="the status, after the failures")
        elapsed = loop.time() - start
        deployment = (await until(lambda: cluster.all("Deployment")))[0]
        revision = deployment["metadata"]["name"]
        await cluster.make_available(revision)
        await until(lambda: ready(cluster).get("status") == "True", what="Ready")
    assert len(server[kmock.action.CREATE, deployments]) >= 1
    assert len(server[kmock.action.LIST, services]) >= 2
    assert len(server[kmock.action.UPDATE, isvcs, kmock.subresource("status")]) >= 2
    # Three failed tries, each after a back-off (1 s, 2 s, 4 s): retried, not given up.
    assert elapsed >= 1.0
    assert [d["metadata"]["name"] for d in cluster.all("Deployment")] == [revision]


async def test_a_kind_the_cluster_does_not_serve_is_reported_in_the_status(
    cluster: Cluster,
) -> None:
    # As an API server without the Gateway API's CRDs answers: 404 for every HTTPRoute call.
    cluster.server[kmock.resource("gateway.networking.k8s.io", "v1", "httproutes")] << 404
    async with running_operator(cluster):
        await cluster.create(isvc_document(sklearn()))
        reported = await until(
            lambda: "httproutes" in (ready(cluster).get("message") or "") and ready(cluster),
            what="the refusal in the status",
        )
        assert reported["status"] == "False"
        assert reported["reason"] == "ApiNotServed"
        assert "is the CRD installed" in reported["message"]
        # What could be applied was: the Deployment is there.
        assert cluster.all("Deployment")


async def test_a_deployment_change_that_fails_to_reconcile_is_retried(cluster: Cluster) -> None:
    server = cluster.server
    async with running_operator(cluster, retry_backoff_s=1.0):
        await cluster.create(isvc_document(sklearn()))
        revision = (await until(lambda: cluster.all("Deployment")))[0]["metadata"]["name"]
        await until(lambda: ready(cluster), what="the first status")
        isvcs = kmock.resource("serving.kserve.io", "v1beta1", "inferenceservices")
        server[kmock.action.UPDATE, isvcs, kmock.subresource("status")][:2] << 500
        await cluster.patch(
            "apps/v1",
            "Deployment",
            "ns",
            revision,
            {"status": deployment_available()},
            subresource="status",
        )
        await until(lambda: ready(cluster).get("status") == "True", what="Ready after 500s")


async def test_a_new_serving_runtime_re_reconciles_the_services_it_can_serve(
    cluster: Cluster,
) -> None:
    formats = {"modelFormat": {"name": "exotic"}, "storageUri": "gs://bucket/m"}
    async with running_operator(cluster, builtin_runtimes=True):
        await cluster.create(isvc_document({"model": formats}))
        refused = await until(lambda: ready(cluster), what="the refusal")
        assert refused["status"] == "False"
        assert refused["reason"] == "NoSupportingRuntime"
        assert not cluster.all("Deployment")
        runtime = {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "ServingRuntime",
            "metadata": {"name": "exotic-server", "namespace": "ns"},
            "spec": {
                "supportedModelFormats": [{"name": "exotic", "version": "1", "autoSelect": True}],
                "protocolVersions": ["v1", "v2"],
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "example.com/exotic-server:1",
                        "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models"],
                    }
                ],
            },
        }
        await cluster.create(runtime)
        deployment = (await until(lambda: cluster.all("Deployment"), what="a Deployment"))[0]
        containers = deployment["spec"]["template"]["spec"]["containers"]
        assert containers[0]["image"] == "example.com/exotic-server:1"
        await until(lambda: status_of(cluster).get("servingRuntimeName") == "exotic-server")
        # A change of the runtime (a new image) is a new revision; the one before never became
        # ready, so nothing keeps it.
        first = deployment["metadata"]["name"]
        await cluster.patch(
            "serving.kserve.io/v1alpha1",
            "ServingRuntime",
            "ns",
            "exotic-server",
            {"spec": {"containers": [{**runtime["spec"]["containers"][0], "image": "x/y:2"}]}},
        )

        def images() -> list[str]:
            return [
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                for d in cluster.all("Deployment")
            ]

        await until(lambda: images() == ["x/y:2"], what="the new revision alone")
        assert first not in {d["metadata"]["name"] for d in cluster.all("Deployment")}


async def test_peering_records_this_operator_in_the_cluster_peering(cluster: Cluster) -> None:
    await cluster.client._call(
        "POST",
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        data='{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",'
        ' "metadata": {"name": "modelhost"}}',
        content_type="application/json",
    )
    key = (kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"), None, "modelhost")

    def peers() -> dict[str, Any]:
        stored = cluster.server.objects[key]
        return dict(stored.get("status") or {})

    async with running_operator(cluster, standalone=False, peering="modelhost", priority=7):
        found = await until(peers, what="this operator in the peering")
        assert [p["priority"] for p in found.values()] == [7]
        # And it works as usual while it leads.
        await cluster.create(isvc_document(sklearn()))
        await until(lambda: cluster.all("Deployment"), what="a Deployment")


async def test_a_lower_priority_replica_pauses_while_a_higher_one_leads(cluster: Cluster) -> None:
    await cluster.client._call(
        "POST",
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        data='{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",'
        ' "metadata": {"name": "modelhost"}, "status": {"leader-pod": {"priority": 100,'
        ' "lifetime": 3600, "lastseen": "2099-01-01T00:00:00+00:00"}}}',
        content_type="application/json",
    )
    async with running_operator(cluster, standalone=False, peering="modelhost", priority=1):
        await cluster.create(isvc_document(sklearn()))
        await asyncio.sleep(30)  # loop time: long enough for a reconcile to have happened
        assert not cluster.all("Deployment")
        assert not status_of(cluster)
