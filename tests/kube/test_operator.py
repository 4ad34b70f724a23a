"""The operator against an emulated API server: apply, roll out, canary, promote, roll back, delete.

kmock stands in for the kube-apiserver (none can run here); a test plays the Deployment
controller by writing a Deployment's status. See ``test_operator_harness``.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_operator_harness import (
    ApiServer,
    Cluster,
    cluster,
    isvc_document,
    no_leaked_tasks,
    running_operator,
    until,
)

from modelhost import control
from modelhost.kube import KubeSettings, render_plan

pytestmark = [pytest.mark.kmock(cls=ApiServer), pytest.mark.looptime]
__all__ = ["cluster", "no_leaked_tasks"]  # fixtures, used by name

OWNED = (
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "PodDisruptionBudget",
    "HTTPRoute",
)


def sklearn(uri: str = "gs://bucket/model-1", **fields: Any) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}, **fields}


def ready_condition(cluster: Cluster, name: str = "iris") -> dict[str, Any] | None:
    isvc = cluster.get("serving.kserve.io/v1beta1", "InferenceService", "ns", name) or {}
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def predictor_status(cluster: Cluster, name: str = "iris") -> dict[str, Any]:
    isvc = cluster.get("serving.kserve.io/v1beta1", "InferenceService", "ns", name) or {}
    return dict(((isvc.get("status") or {}).get("components") or {}).get("predictor") or {})


def weights(cluster: Cluster, name: str = "iris") -> dict[str, int]:
    route = cluster.get("gateway.networking.k8s.io/v1", "HTTPRoute", "ns", name)
    if route is None:
        return {}
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}


def deployments(cluster: Cluster) -> set[str]:
    return {d["metadata"]["name"] for d in cluster.all("Deployment")}


def owned(cluster: Cluster) -> list[dict[str, Any]]:
    return [obj for kind in OWNED for obj in cluster.all(kind)]


def expected_manifests(document: dict[str, Any]) -> list[dict[str, Any]]:
    isvc = control.parse_object(document)
    assert isinstance(isvc, control.InferenceService)
    return render_plan(control.plan(isvc), KubeSettings())


async def test_an_inference_service_becomes_the_rendered_objects_owned_by_it(
    cluster: Cluster,
) -> None:
    document = isvc_document(sklearn())
    async with running_operator(cluster):
        created = await cluster.create(document)
        expected = expected_manifests(document)
        await until(lambda: len(owned(cluster)) >= len(expected), what="the objects")
        await until(lambda: ready_condition(cluster), what="a status")
    uid = created["metadata"]["uid"]
    for manifest in expected:
        meta = manifest["metadata"]
        live = cluster.get(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        assert live is not None, f"{manifest['kind']} {meta['name']} was not created"
        owners = live["metadata"].pop("ownerReferences")
        assert owners == [
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "name": "iris",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp"):
            live["metadata"].pop(field)  # what the API server adds
        assert live == manifest
    assert {m["kind"] for m in expected} >= {"Deployment", "Service", "HTTPRoute"}
    assert {m["kind"] for m in expected} & {"HorizontalPodAutoscaler", "ScaledObject"}
    ready = ready_condition(cluster)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "RevisionMissing")


async def test_rollout_canary_promote_rollback_and_delete(cluster: Cluster) -> None:
    path = ("serving.kserve.io/v1beta1", "InferenceService", "ns", "iris")
    async with running_operator(cluster):
        await cluster.create(isvc_document(sklearn("gs://bucket/model-1")))
        first = (await until(lambda: deployments(cluster), what="the first Deployment")).pop()
        await cluster.make_available(first)
        await until(lambda: (ready_condition(cluster) or {}).get("status") == "True")
        assert predictor_status(cluster)["latestRolledoutRevision"] == first
        assert weights(cluster) == {first: 100}

        # A new model with a canary of 20%: a new revision, which gets its share once ready.
        await cluster.patch(
            *path, {"spec": {"predictor": sklearn("gs://bucket/model-2", canaryTrafficPercent=20)}}
        )
        second = (
            await until(lambda: deployments(cluster) - {first}, what="the new revision")
        ).pop()
        await until(lambda: predictor_status(cluster).get("latestCreatedRevision") == second)
        assert weights(cluster) == {first: 100}  # not ready yet: the stable one serves
        await cluster.make_available(second)
        await until(lambda: weights(cluster) == {second: 20, first: 80}, what="80/20")
        traffic = predictor_status(cluster)["traffic"]
        assert {(t["revisionName"], t["percent"]) for t in traffic} == {(second, 20), (first, 80)}

        # Promote: the canary takes everything; the old revision idles for a rollback.
        # (null removes the field in a merge patch, as kubectl edit would)
        promoted = sklearn("gs://bucket/model-2", canaryTrafficPercent=None)
        await cluster.patch(*path, {"spec": {"predictor": promoted}})
        await until(lambda: weights(cluster) == {second: 100}, what="the promotion")
        await until(lambda: predictor_status(cluster).get("latestRolledoutRevision") == second)
        assert predictor_status(cluster)["previousRolledoutRevision"] == first
        old = cluster.get("apps/v1", "Deployment", "ns", first)
        assert old is not None
        assert old["spec"]["replicas"] == 0

        # Roll back: canaryTrafficPercent 0 sends everything back to the previous revision.
        await cluster.patch(
            *path, {"spec": {"predictor": sklearn("gs://bucket/model-2", canaryTrafficPercent=0)}}
        )
        await until(lambda: weights(cluster) == {second: 0, first: 100}, what="the rollback")
        await until(
            lambda: (
                (cluster.get("apps/v1", "Deployment", "ns", first) or {})["spec"]["replicas"] == 1
            )
        )
        await until(lambda: predictor_status(cluster).get("latestRolledoutRevision") == first)

        # Delete: everything it owned goes with it.
        assert await cluster.delete(*path[:2], "ns", "iris")
        await until(lambda: not owned(cluster), what="the owned objects to go")


async def test_a_crash_looping_deployment_makes_the_service_not_ready_with_that_reason(
    cluster: Cluster,
) -> None:
    async with running_operator(cluster):
        await cluster.create(isvc_document(sklearn()))
        revision = (await until(lambda: deployments(cluster))).pop()
        await cluster.patch(
            "apps/v1",
            "Deployment",
            "ns",
            revision,
            {
                "status": {
                    "observedGeneration": 1,
                    "replicas": 1,
                    "unavailableReplicas": 1,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "False",
                            "reason": "MinimumReplicasUnavailable",
                        }
                    ],
                }
            },
            subresource="status",
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{revision}-5c7d8-x2x9q",
                "namespace": "ns",
                "labels": cluster.get("apps/v1", "Deployment", "ns", revision)["spec"]["template"][
                    "metadata"
                ]["labels"],
            },
            "spec": {"containers": [{"name": "kserve-container", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "kserve-container",
                        "ready": False,
                        "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 1,
                                "reason": "Error",
                                "message": "no model file in /mnt/models",
                            }
                        },
                    }
                ],
            },
        }
        await cluster.create(pod)
        ready = await until(
            lambda: (
                (ready_condition(cluster) or {}).get("reason") == "CrashLoopBackOff"
                and ready_condition(cluster)
            ),
            what="Ready=False CrashLoopBackOff",
        )
        assert ready["status"] == "False"
        assert "no model file in /mnt/models" in ready["message"]
        isvc = cluster.get("serving.kserve.io/v1beta1", "InferenceService", "ns", "iris")
        model = isvc["status"]["modelStatus"]
        assert model["transitionStatus"] == "BlockedByFailedLoad"
        assert model["lastFailureInfo"]["reason"] == "ModelLoadFailed"

        # A progress deadline passed without any pod information says so too.
        await cluster.delete("v1", "Pod", "ns", pod["metadata"]["name"])
        await cluster.patch(
            "apps/v1",
            "Deployment",
            "ns",
            revision,
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "False",
                            "reason": "MinimumReplicasUnavailable",
                        },
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": f'ReplicaSet "{revision}-5c7d8" has timed out progressing.',
                        },
                    ]
                }
            },
            subresource="status",
        )
        await until(
            lambda: (ready_condition(cluster) or {}).get("reason") == "ProgressDeadlineExceeded",
            what="Ready=False ProgressDeadlineExceeded",
        )


async def test_an_invalid_object_gets_a_condition_naming_the_field_and_the_operator_goes_on(
    cluster: Cluster,
) -> None:
    async with running_operator(cluster):
        await cluster.create(isvc_document(sklearn(minReplicas=3, maxReplicas=1), name="bad"))
        await cluster.create(
            isvc_document({"minReplica": 1, **sklearn()}, name="typo")  # not in KServe's schema
        )
        bad = await until(lambda: ready_condition(cluster, "bad"), what="the refusal")
        assert bad["status"] == "False"
        assert "spec.predictor.minReplicas" in bad["message"]
        typo = await until(lambda: ready_condition(cluster, "typo"), what="the parse error")
        assert typo["status"] == "False"
        assert "spec.predictor.minReplica" in typo["message"]
        assert not owned(cluster)
        # Still serving others: a valid object is handled.
        await cluster.create(isvc_document(sklearn(), name="good"))
        await until(lambda: ready_condition(cluster, "good"), what="the valid one's status")
        assert any(d["metadata"]["name"].startswith("good-") for d in cluster.all("Deployment"))


async def test_an_operator_limited_to_namespaces_leaves_the_others_alone(cluster: Cluster) -> None:
    async with running_operator(cluster, namespaces=("ns",)):
        await cluster.create(isvc_document(sklearn(), namespace="elsewhere"))
        await cluster.create(isvc_document(sklearn()))
        await until(lambda: cluster.all("Deployment"), what="the watched namespace's objects")
        await until(lambda: ready_condition(cluster), what="its status")
    assert not cluster.all("Deployment", namespace="elsewhere")
    other = cluster.get("serving.kserve.io/v1beta1", "InferenceService", "elsewhere", "iris")
    assert "status" not in other
