"""Reconcile decisions (no I/O): what to apply, scale and delete, through a rollout's steps.

A dict stands in for the cluster: it stores what a reconcile applies, scales and deletes,
and a test marks a revision's Deployment available the way its controller would.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelhost import control
from modelhost.control.objects import InferenceServiceStatus
from modelhost.kube import KubeSettings, render_plan
from modelhost.kube.labels import object_labels
from modelhost.kube.reconcile import (
    ObjectRef,
    Reconciliation,
    is_owned_by,
    needs_apply,
    owner_reference,
    reconcile,
    serving_plan,
)

SETTINGS = KubeSettings()
UID = "7f0c1e52-0000-4000-8000-000000000001"


def sklearn(uri: str = "gs://bucket/model-1", **fields: Any) -> dict[str, Any]:
    """A predictor serving an sklearn model; ``fields`` are the predictor's (minReplicas, ...)."""
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}, **fields}


def isvc(
    predictor: dict[str, Any], *, annotations: dict[str, str] | None = None
) -> control.InferenceService:
    metadata: dict[str, Any] = {"name": "iris", "namespace": "ns", "uid": UID}
    if annotations:
        metadata["annotations"] = annotations
    parsed = control.parse_object(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": metadata,
            "spec": {"predictor": predictor},
        }
    )
    assert isinstance(parsed, control.InferenceService)
    return parsed


class Cluster:
    """The objects a reconcile would leave in a cluster, and the status it would write."""

    def __init__(self) -> None:
        self.objects: dict[ObjectRef, dict[str, Any]] = {}
        self.status: InferenceServiceStatus | None = None

    def step(self, service: control.InferenceService) -> Reconciliation:
        result = reconcile(
            service, None, list(self.objects.values()), SETTINGS, previous=self.status
        )
        for manifest in result.apply:
            ref = ObjectRef.of(manifest)
            live = self.objects.get(ref)
            merged = copy.deepcopy(manifest)
            if live is not None and "status" in live:
                merged["status"] = live["status"]
            self.objects[ref] = merged
        for scale in result.scale:
            self.objects[scale.target]["spec"]["replicas"] = scale.replicas
        for ref in result.delete:
            del self.objects[ref]
        self.status = result.status
        return result

    def available(self, revision: str) -> None:
        deployment = self.objects[ObjectRef("apps/v1", "Deployment", "ns", revision)]
        deployment["status"] = {
            "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        }

    def names(self, kind: str) -> set[str]:
        return {ref.name for ref in self.objects if ref.kind == kind}

    def weights(self) -> dict[str, int]:
        """The service host's HTTPRoute: revision Service → weight."""
        route = self.objects[ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "ns", "iris")]
        return {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}

    def replicas(self, revision: str) -> int:
        deployment = self.objects[ObjectRef("apps/v1", "Deployment", "ns", revision)]
        return int(deployment["spec"].get("replicas", 1))


def newest(result: Reconciliation) -> str:
    assert result.plan is not None
    predictor = result.plan.component("predictor")
    assert predictor is not None
    return predictor.revision.name


def test_the_first_reconcile_applies_the_rendered_plan_each_owned_by_the_service() -> None:
    service = isvc(sklearn())
    result = reconcile(service, None, [], SETTINGS)
    expected = render_plan(control.plan(service), SETTINGS)
    assert [ObjectRef.of(m) for m in result.apply] == [ObjectRef.of(m) for m in expected]
    for manifest, rendered in zip(result.apply, expected, strict=True):
        owners = manifest["metadata"].pop("ownerReferences")
        assert owners == [
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "name": "iris",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert manifest == rendered
    assert {m["kind"] for m in result.apply} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "HTTPRoute",
    }
    assert result.delete == ()
    assert result.scale == ()
    assert result.error is None


def test_a_model_change_rolls_out_a_new_revision_behind_the_ready_one() -> None:
    cluster = Cluster()
    first = newest(cluster.step(isvc(sklearn("gs://bucket/model-1"))))
    cluster.available(first)
    cluster.step(isvc(sklearn("gs://bucket/model-1")))
    second = newest(cluster.step(isvc(sklearn("gs://bucket/model-2"))))
    assert second != first
    assert cluster.names("Deployment") == {first, second}
    # Until the new revision is ready, the ready one serves everything.
    assert cluster.weights() == {first: 100}
    cluster.available(second)
    cluster.step(isvc(sklearn("gs://bucket/model-2")))
    assert cluster.weights() == {second: 100}
    # The rolled-out revision before stays for a rollback, at zero replicas; its Service goes.
    assert cluster.names("Deployment") == {first, second}
    assert cluster.replicas(first) == 0
    assert first not in cluster.names("Service")
    predictor = (cluster.status.components or {})["predictor"] if cluster.status else None
    assert predictor is not None
    assert predictor.latest_rolledout_revision == second
    assert predictor.previous_rolledout_revision == first


def test_canary_promote_and_rollback_set_the_route_weights() -> None:
    cluster = Cluster()
    stable = newest(cluster.step(isvc(sklearn("gs://bucket/model-1"))))
    cluster.available(stable)
    cluster.step(isvc(sklearn("gs://bucket/model-1")))
    canary = newest(cluster.step(isvc(sklearn("gs://bucket/model-2", canaryTrafficPercent=20))))
    assert cluster.weights() == {stable: 100}  # the canary is not ready yet
    cluster.available(canary)
    cluster.step(isvc(sklearn("gs://bucket/model-2", canaryTrafficPercent=20)))
    assert cluster.weights() == {canary: 20, stable: 80}
    assert cluster.replicas(stable) == 1  # the stable revision serves its share

    promoted = cluster.step(isvc(sklearn("gs://bucket/model-2")))
    assert newest(promoted) == canary
    assert cluster.weights() == {canary: 100}
    assert cluster.replicas(stable) == 0

    cluster.step(isvc(sklearn("gs://bucket/model-2", canaryTrafficPercent=0)))
    assert cluster.weights() == {canary: 0, stable: 100}
    assert cluster.replicas(stable) == 1  # woken up for the rollback
    # And it stays so: the rollback is recorded, the next reconcile changes nothing.
    again = cluster.step(isvc(sklearn("gs://bucket/model-2", canaryTrafficPercent=0)))
    assert cluster.weights() == {canary: 0, stable: 100}
    assert again.scale == ()
    assert again.delete == ()


def test_objects_no_longer_rendered_are_deleted_and_others_owners_are_left_alone() -> None:
    cluster = Cluster()
    cluster.step(isvc(sklearn(minReplicas=2, maxReplicas=4)))
    assert "iris-predictor" in cluster.names("PodDisruptionBudget")
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "iris-extra",
            "namespace": "ns",
            "labels": object_labels("iris"),
            "ownerReferences": [{**owner_reference(isvc(sklearn())), "uid": "someone-else"}],
        },
    }
    cluster.objects[ObjectRef.of(foreign)] = foreign
    # One replica at most: nothing to keep during a drain, so no budget any more.
    result = cluster.step(isvc(sklearn(minReplicas=1, maxReplicas=1)))
    assert ObjectRef("policy/v1", "PodDisruptionBudget", "ns", "iris-predictor") in result.delete
    assert ObjectRef.of(foreign) not in result.delete
    assert "iris-extra" in cluster.names("Service")


def test_scale_to_zero_swaps_the_hpa_for_a_scaled_object() -> None:
    cluster = Cluster()
    cluster.step(isvc(sklearn()))
    assert cluster.names("HorizontalPodAutoscaler")
    result = cluster.step(isvc(sklearn(minReplicas=0)))
    assert any(ref.kind == "HorizontalPodAutoscaler" for ref in result.delete)
    assert cluster.names("ScaledObject")


def test_a_revision_idled_at_zero_is_woken_when_it_is_the_newest_again() -> None:
    cluster = Cluster()
    first = newest(cluster.step(isvc(sklearn("gs://bucket/model-1"))))
    cluster.available(first)
    cluster.step(isvc(sklearn("gs://bucket/model-1")))
    second = newest(cluster.step(isvc(sklearn("gs://bucket/model-2"))))
    cluster.available(second)
    cluster.step(isvc(sklearn("gs://bucket/model-2")))
    assert cluster.replicas(first) == 0
    # Back to the first model: the same spec plans the same revision; its HPA cannot wake it.
    result = cluster.step(isvc(sklearn("gs://bucket/model-1")))
    assert newest(result) == first
    assert cluster.replicas(first) == 1


def test_an_invalid_object_changes_nothing_and_says_why() -> None:
    cluster = Cluster()
    cluster.step(isvc(sklearn()))
    before = dict(cluster.objects)
    result = reconcile(
        isvc(sklearn(minReplicas=5, maxReplicas=2)),
        None,
        list(cluster.objects.values()),
        SETTINGS,
        previous=cluster.status,
    )
    assert isinstance(result.error, control.ValidationError)
    assert (result.apply, result.scale, result.delete) == ((), (), ())
    assert cluster.objects == before
    ready = next(c for c in result.status.conditions or () if c.type == "Ready")
    assert ready.status == "False"
    assert "spec.predictor.minReplicas" in (ready.message or "")


def test_serving_plan_merges_shares_landing_on_one_revision() -> None:
    service = isvc(sklearn("gs://bucket/model-2", canaryTrafficPercent=20))
    status = control.InferenceServiceStatus(
        components={
            "predictor": control.objects.ComponentStatusSpec(
                latest_rolledout_revision="iris-predictor-old",
                latest_ready_revision="iris-predictor-old",
            )
        }
    )
    plan = control.plan(service, previous=status)
    predictor = plan.component("predictor")
    assert predictor is not None
    rollout = control.propagate_rollout(
        (status.components or {})["predictor"], predictor, ready={"iris-predictor-old"}
    )
    served = serving_plan(plan, {"predictor": rollout}).component("predictor")
    assert served is not None
    assert [(s.revision, s.percent, s.latest) for s in served.traffic] == [
        ("iris-predictor-old", 100, True)
    ]
    assert served.revision == predictor.revision


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        (None, True),
        # The API server's defaults and other managers' fields do not matter.
        (
            {
                "metadata": {"name": "a", "uid": "1", "labels": {"x": "1", "y": "2"}},
                "spec": {"replicas": 3, "template": [{"name": "c", "imagePullPolicy": "Always"}]},
            },
            False,
        ),
        ({"metadata": {"name": "a", "labels": {"x": "2"}}, "spec": {}}, True),
        ({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"template": []}}, True),
    ],
)
def test_needs_apply_compares_only_what_the_operator_sets(
    live: dict[str, Any] | None, expected: bool
) -> None:
    desired = {
        "metadata": {"name": "a", "labels": {"x": "1"}},
        "spec": {"template": [{"name": "c"}]},
    }
    assert needs_apply(live, desired) is expected


def test_ownership_is_by_controller_uid() -> None:
    owner = owner_reference(isvc(sklearn()))
    assert is_owned_by({"metadata": {"ownerReferences": [owner]}}, UID)
    assert not is_owned_by({"metadata": {"ownerReferences": [owner]}}, "other")
    not_controller = {**owner, "controller": False}
    assert not is_owned_by({"metadata": {"ownerReferences": [not_controller]}}, UID)
    assert not is_owned_by({"metadata": {}}, "")
