"""KServe's status from Deployments and pods as the API server reports them (pure, no cluster)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelhost import control
from modelhost.control.errors import ParseError, RuntimeSelectionError
from modelhost.control.objects import InferenceServiceStatus
from modelhost.errors import Unsupported
from modelhost.kube.labels import object_labels
from modelhost.kube.status import (
    observe_revisions,
    parse_status,
    refused_status,
    revision_health,
    service_status,
    status_patch,
)


def sklearn(uri: str = "gs://bucket/iris", **fields: Any) -> dict[str, Any]:
    """A predictor serving an sklearn model; ``fields`` are the predictor's (minReplicas, ...)."""
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}, **fields}


def isvc(
    predictor: dict[str, Any], *, namespace: str = "ns", annotations: dict[str, str] | None = None
) -> control.InferenceService:
    metadata: dict[str, Any] = {"name": "iris", "namespace": namespace}
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


def deployment(
    revision: str,
    *,
    available: int = 0,
    replicas: int = 1,
    conditions: list[dict[str, Any]] | None = None,
    isvc_name: str = "iris",
) -> dict[str, Any]:
    """A Deployment as the API server returns it, with the status its controller writes."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": revision,
            "namespace": "ns",
            "generation": 2,
            "labels": object_labels(isvc_name, "predictor", revision),
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def available(revision: str, replicas: int = 1) -> dict[str, Any]:
    return deployment(
        revision,
        available=replicas,
        replicas=replicas,
        conditions=[
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    )


def unavailable(revision: str, progressing: dict[str, Any] | None = None) -> dict[str, Any]:
    return deployment(
        revision,
        conditions=[
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            },
            progressing or {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
        ],
    )


def pod(revision: str, *, init: list[Any] | None = None, main: list[Any] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{revision}-7d9f-abcde",
            "namespace": "ns",
            "labels": object_labels("iris", "predictor", revision),
        },
        "status": {
            "phase": "Pending" if init else "Running",
            "initContainerStatuses": init or [],
            "containerStatuses": main or [],
        },
    }


def crash_looping(name: str = "kserve-container") -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 4,
        "state": {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off 1m20s restarting failed container",
            }
        },
        "lastState": {
            "terminated": {"exitCode": 1, "reason": "Error", "message": "model.joblib not found"}
        },
    }


def image_pull_backoff() -> dict[str, Any]:
    return {
        "name": "kserve-container",
        "ready": False,
        "restartCount": 0,
        "state": {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": 'Back-off pulling image "modelhost/modelhost-tabular:0.0.0"',
            }
        },
    }


def newest(service: Any) -> str:
    result = control.plan(service)
    return result.component("predictor").revision.name


def condition(status: InferenceServiceStatus, kind: str) -> Any:
    return next(c for c in status.conditions or () if c.type == kind)


# -- one revision's health ---------------------------------------------------------------


def test_an_available_deployment_is_ready() -> None:
    health = revision_health(available("iris-predictor-a", replicas=2))
    assert health.ready
    assert health.available_replicas == 2
    assert health.reason is None


def test_an_available_condition_of_an_older_generation_is_not_ready_yet() -> None:
    stale = available("iris-predictor-a")
    stale["status"]["observedGeneration"] = 1
    assert not revision_health(stale).ready


def test_a_crash_looping_pod_is_the_reason_with_its_last_exit() -> None:
    health = revision_health(
        unavailable("iris-predictor-a"), [pod("iris-predictor-a", main=[crash_looping()])]
    )
    assert not health.ready
    assert health.failed
    assert health.reason == "CrashLoopBackOff"
    assert "kserve-container" in (health.message or "")
    assert "model.joblib not found" in (health.message or "")
    assert health.model_failure is not None
    assert health.model_failure.exit_code == 1


def test_an_image_that_cannot_be_pulled_is_the_reason_but_not_a_model_failure() -> None:
    health = revision_health(
        unavailable("iris-predictor-a"), [pod("iris-predictor-a", main=[image_pull_backoff()])]
    )
    assert health.reason == "ImagePullBackOff"
    assert health.failed
    assert health.model_failure is None


def test_a_crash_looping_storage_initializer_is_a_model_failure() -> None:
    health = revision_health(
        unavailable("iris-predictor-a"),
        [pod("iris-predictor-a", init=[crash_looping("storage-initializer")])],
    )
    assert health.reason == "CrashLoopBackOff"
    assert health.model_failure is not None


def test_a_passed_progress_deadline_fails_the_revision() -> None:
    deadline = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "iris-predictor-a-7d9f" has timed out progressing.',
    }
    health = revision_health(unavailable("iris-predictor-a", deadline))
    assert health.reason == "ProgressDeadlineExceeded"
    assert health.failed
    assert "timed out progressing" in (health.message or "")


def test_a_replica_failure_is_the_reason() -> None:
    quota = deployment(
        "iris-predictor-a",
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "iris-predictor-a-x" is forbidden: exceeded quota',
            }
        ],
    )
    health = revision_health(quota)
    assert (health.reason, health.failed) == ("FailedCreate", True)
    assert "exceeded quota" in (health.message or "")


def test_an_unschedulable_pod_is_the_reason_but_may_still_start() -> None:
    waiting = pod("iris-predictor-a")
    waiting["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }
    ]
    health = revision_health(unavailable("iris-predictor-a"), [waiting])
    assert health.reason == "Unschedulable"
    assert not health.failed
    assert "Insufficient cpu" in (health.message or "")


def test_a_starting_deployment_says_how_many_replicas_are_available() -> None:
    health = revision_health(unavailable("iris-predictor-a"))
    assert health.reason == "MinimumReplicasUnavailable"
    assert not health.failed
    assert "0 of 1 replicas available" in (health.message or "")


def test_a_running_storage_initializer_is_loading() -> None:
    initializing = pod(
        "iris-predictor-a", init=[{"name": "storage-initializer", "state": {"running": {}}}]
    )
    assert revision_health(unavailable("iris-predictor-a"), [initializing]).loading


def test_observe_revisions_pairs_deployments_with_their_pods_by_revision() -> None:
    found = observe_revisions(
        [available("iris-predictor-a"), unavailable("iris-predictor-b")],
        [pod("iris-predictor-b", main=[crash_looping()]), pod("iris-predictor-a")],
    )
    assert set(found) == {"iris-predictor-a", "iris-predictor-b"}
    assert found["iris-predictor-a"].ready
    assert found["iris-predictor-b"].reason == "CrashLoopBackOff"


# -- the service's status ----------------------------------------------------------------


def test_a_service_whose_deployment_crash_loops_is_not_ready_with_that_reason() -> None:
    service = isvc(sklearn())
    revision = newest(service)
    health = observe_revisions([unavailable(revision)], [pod(revision, main=[crash_looping()])])
    status = service_status(control.plan(service), health, None)
    ready = condition(status, "Ready")
    assert (ready.status, ready.reason) == ("False", "CrashLoopBackOff")
    assert "model.joblib not found" in ready.message
    assert condition(status, "PredictorReady").reason == "CrashLoopBackOff"
    model = status.model_status or {}
    assert model["transitionStatus"] == "BlockedByFailedLoad"
    assert model["states"]["targetModelState"] == "FailedToLoad"
    assert model["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert model["lastFailureInfo"]["exitCode"] == 1
    assert model["lastFailureInfo"]["modelRevisionName"] == revision


def test_a_service_whose_deployment_is_available_is_ready_and_loaded() -> None:
    service = isvc(sklearn())
    revision = newest(service)
    status = service_status(
        control.plan(service), observe_revisions([available(revision, 2)], []), None
    )
    assert {c.type: c.status for c in status.conditions or ()} == {
        "IngressReady": "True",
        "LatestDeploymentReady": "True",
        "PredictorReady": "True",
        "Ready": "True",
    }
    predictor = (status.components or {})["predictor"]
    assert predictor.latest_ready_revision == predictor.latest_created_revision == revision
    assert predictor.latest_rolledout_revision == revision
    assert predictor.address is not None
    assert predictor.address.url == "http://iris-predictor.ns.svc.cluster.local"
    assert status.url == "http://iris.ns.example.com"
    assert status.cluster_serving_runtime_name == "kserve-sklearnserver"
    model = status.model_status or {}
    assert model["transitionStatus"] == "UpToDate"
    assert model["states"] == {"activeModelState": "Loaded", "targetModelState": "Loaded"}
    assert model["copies"] == {"failedCopies": 0, "totalCopies": 2}


def test_a_failing_new_revision_keeps_the_service_ready_on_the_previous_one() -> None:
    first = isvc(sklearn("gs://bucket/v1"))
    old = newest(first)
    rolled = service_status(control.plan(first), observe_revisions([available(old)], []), None)
    second = isvc(sklearn("gs://bucket/v2"))
    new = newest(second)
    health = observe_revisions(
        [available(old), unavailable(new)], [pod(new, main=[image_pull_backoff()])]
    )
    status = service_status(control.plan(second, previous=rolled), health, rolled)
    assert condition(status, "Ready").status == "True"
    latest = condition(status, "LatestDeploymentReady")
    assert (latest.status, latest.reason) == ("False", "ImagePullBackOff")
    traffic = (status.components or {})["predictor"].traffic or []
    # The latest share is served by the latest ready revision until the new one is ready.
    assert [(t.revision_name, t.percent) for t in traffic] == [(old, 100)]


def test_a_service_without_any_deployment_yet_is_waiting_for_its_revision() -> None:
    service = isvc(sklearn())
    status = service_status(control.plan(service), {}, None)
    ready = condition(status, "Ready")
    assert (ready.status, ready.reason) == ("False", "RevisionMissing")
    assert (status.model_status or {})["transitionStatus"] == "InProgress"


def test_a_stopped_service_says_stopped() -> None:
    service = isvc(sklearn(), namespace="ns", annotations={"serving.kserve.io/stop": "true"})
    status = service_status(control.plan(service), {}, None)
    assert condition(status, "Ready").reason == "Stopped"


# -- refused objects ---------------------------------------------------------------------


def test_an_invalid_object_is_not_ready_with_a_message_naming_the_field() -> None:
    with pytest.raises(control.ValidationError) as refused:
        control.plan(isvc(sklearn(minReplicas=-1)))
    status = refused_status(refused.value, None, 3)
    ready = condition(status, "Ready")
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert "spec.predictor" in ready.message
    assert status.observed_generation == 3
    model = status.model_status or {}
    assert model["transitionStatus"] == "InvalidSpec"
    assert model["states"]["targetModelState"] == "FailedToLoad"
    assert model["lastFailureInfo"]["reason"] == "InvalidPredictorSpec"


def test_no_runtime_for_the_format_is_kserves_failure_reason() -> None:
    service = isvc({"model": {"modelFormat": {"name": "tensorflow"}, "storageUri": "gs://b/m"}})
    with pytest.raises(RuntimeSelectionError) as refused:
        control.plan(service, [])
    status = refused_status(refused.value, None, 1)
    assert condition(status, "Ready").reason == refused.value.failure_reason
    assert (status.model_status or {})["lastFailureInfo"]["reason"] == "NoSupportingRuntime"


def test_a_refusal_keeps_what_was_rolled_out() -> None:
    service = isvc(sklearn())
    revision = newest(service)
    before = service_status(
        control.plan(service), observe_revisions([available(revision)], []), None
    )
    status = refused_status(Unsupported("spec.canary is not supported yet"), before, 2)
    assert condition(status, "Ready").reason == "Unsupported"
    assert (status.components or {})["predictor"].latest_rolledout_revision == revision
    assert (status.model_status or {})["states"]["activeModelState"] == "Loaded"


def test_a_parse_error_names_the_unknown_field() -> None:
    with pytest.raises(ParseError) as refused:
        control.parse_object(
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "iris"},
                "spec": {"predictor": {"minReplica": 1, **sklearn()}},
            }
        )
    status = refused_status(refused.value, None, 1)
    assert "spec.predictor.minReplica" in condition(status, "Ready").message


# -- writing it --------------------------------------------------------------------------


def test_the_status_patch_is_empty_when_nothing_changed_and_nulls_what_went() -> None:
    service = isvc(sklearn())
    revision = newest(service)
    failing = service_status(
        control.plan(service),
        observe_revisions([unavailable(revision)], [pod(revision, main=[crash_looping()])]),
        None,
    )
    live = msgspec.to_builtins(failing)
    again = service_status(
        control.plan(service),
        observe_revisions([unavailable(revision)], [pod(revision, main=[crash_looping()])]),
        parse_status(live),
    )
    assert status_patch(live, again) is None  # same failure, same times: nothing to write
    healed = service_status(
        control.plan(service), observe_revisions([available(revision)], []), parse_status(live)
    )
    patch = status_patch(live, healed)
    assert patch is not None
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert "reason" not in ready
    assert patch["modelStatus"]["transitionStatus"] == "UpToDate"


def test_parse_status_tolerates_garbage() -> None:
    assert parse_status(None) is None
    assert parse_status({"conditions": "not a list"}) is None
    parsed = parse_status({"url": "http://x", "somethingNew": 1})
    assert parsed is not None
    assert parsed.url == "http://x"
