"""KServe's InferenceService status, from the plan and what the cluster says of its Deployments.

A revision is a Deployment (and its pods); this module reads what they say — the Deployment's
``Available``/``Progressing``/``ReplicaFailure`` conditions, and each pod's container states —
into one :class:`RevisionHealth`, then writes the status KServe writes: each component's
rollout (``control.propagate_rollout``), the conditions (``control.conditions``) with the
reason a Deployment cannot become available (``CrashLoopBackOff``, ``ImagePullBackOff``,
``ProgressDeadlineExceeded``, ...), and ``modelStatus``. An object the planner refuses gets
``Ready=False`` with a message naming the field. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from modelhost import control, errors
from modelhost.control.conditions import COMPONENT_CONDITIONS, Check, conditions, service_conditions
from modelhost.control.errors import ParseError, RuntimeSelectionError
from modelhost.control.names import KSERVE_CONTAINER
from modelhost.control.objects import (
    Addressable,
    ComponentStatusSpec,
    InferenceGraphStatus,
    InferenceServiceStatus,
)
from modelhost.control.plan_types import ComponentPlan, ServicePlan
from modelhost.kube.labels import COMPONENT, REVISION
from modelhost.kube.manifests.model_source import INITIALIZER_CONTAINER

__all__ = [
    "FAILING_WAIT_REASONS",
    "ModelFailure",
    "RevisionHealth",
    "observe_revisions",
    "parse_status",
    "refused_status",
    "revision_health",
    "service_status",
    "status_patch",
]

# A container waiting for one of these will not start without a change (of the spec, the
# image, a Secret, ...): the revision is failing, not merely starting.
FAILING_WAIT_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# The containers whose crash is the model's failure to load (KServe's ModelLoadFailed).
_MODEL_CONTAINERS = (INITIALIZER_CONTAINER, KSERVE_CONTAINER)


@dataclasses.dataclass(frozen=True)
class ModelFailure:
    """Why the model did not load: KServe's ``modelStatus.lastFailureInfo``."""

    location: str  # the pod
    message: str
    exit_code: int | None = None


@dataclasses.dataclass(frozen=True)
class RevisionHealth:
    """What one revision's Deployment and pods say.

    ``reason``/``message`` explain why it is not ready; ``failed`` says it cannot become
    ready without a change (a crash loop, an image that cannot be pulled, a deadline passed).
    """

    revision: str
    component: str | None
    ready: bool
    available_replicas: int = 0
    pods: int = 0
    reason: str | None = None
    message: str | None = None
    failed: bool = False
    loading: bool = False
    model_failure: ModelFailure | None = None


def observe_revisions(
    objects: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> dict[str, RevisionHealth]:
    """The health of every revision that has a Deployment among ``objects``, by revision name."""
    by_revision: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        revision = _labels(pod).get(REVISION)
        if revision:
            by_revision.setdefault(revision, []).append(pod)
    health: dict[str, RevisionHealth] = {}
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        revision = _labels(obj).get(REVISION)
        if revision:
            health[revision] = revision_health(obj, by_revision.get(revision, ()))
    return health


def revision_health(
    deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()
) -> RevisionHealth:
    """One revision's health from its Deployment and (optionally) its pods."""
    labels = _labels(deployment)
    revision = labels.get(REVISION) or _meta(deployment).get("name", "")
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    available = int(status.get("availableReplicas") or 0)
    found = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, dict)}
    current = int(status.get("observedGeneration") or 0) >= int(
        _meta(deployment).get("generation") or 0
    )
    ready = _is(found.get("Available"), "True") and (available > 0 or desired == 0) and current
    base = RevisionHealth(
        revision=revision,
        component=labels.get(COMPONENT),
        ready=ready,
        available_replicas=available,
        pods=len(pods),
    )
    loading = any(_initializer_running(pod) for pod in pods)
    model_failure = next((f for f in map(_model_failure, pods) if f is not None), None)
    if ready:
        return dataclasses.replace(base, model_failure=model_failure)
    pod_problem = next((p for p in map(_pod_problem, pods) if p is not None), None)
    if pod_problem is not None:
        reason, message, failed = pod_problem
        return dataclasses.replace(
            base,
            reason=reason,
            message=f"revision {revision}: {message}",
            failed=failed,
            loading=loading,
            model_failure=model_failure,
        )
    replica_failure = found.get("ReplicaFailure")
    progressing = found.get("Progressing")
    if _is(replica_failure, "True"):
        assert replica_failure is not None
        return dataclasses.replace(
            base,
            reason=replica_failure.get("reason") or "ReplicaFailure",
            message=f"revision {revision}: {replica_failure.get('message') or ''}".rstrip(": "),
            failed=True,
        )
    if _is(progressing, "False"):
        assert progressing is not None
        return dataclasses.replace(
            base,
            reason=progressing.get("reason") or "ProgressDeadlineExceeded",
            message=f"revision {revision}: {progressing.get('message') or 'no progress'}",
            failed=True,
            model_failure=model_failure,
        )
    unavailable = found.get("Available")
    reason = str((unavailable or {}).get("reason") or "") if _is(unavailable, "False") else ""
    return dataclasses.replace(
        base,
        reason=reason or "RevisionMissing",
        message=f"revision {revision}: {available} of {desired} replicas available",
        loading=loading,
        model_failure=model_failure,
    )


def service_status(
    plan: ServicePlan,
    health: Mapping[str, RevisionHealth],
    previous: InferenceServiceStatus | None,
) -> InferenceServiceStatus:
    """KServe's status of ``plan`` carried out, when the revisions are as ``health`` says."""
    status = control.plan_status(plan, plan.generation)
    before = (previous.components or {}) if previous is not None else {}
    checks: list[Check] = []
    for component in plan.components:
        ready = {name for name, h in health.items() if h.ready}
        rollout = control.propagate_rollout(before.get(component.component), component, ready)
        rollout.address = Addressable(
            url=f"http://{component.service_name}.{plan.namespace}.svc.cluster.local"
        )
        assert status.components is not None
        status.components[component.component] = rollout
        checks.append(_component_check(component, rollout, health, plan.stopped))
    predictor = (status.components or {}).get("predictor")
    status.conditions = service_conditions(
        checks,
        stopped=plan.stopped,
        predictor=predictor,
        previous=previous.conditions if previous is not None else None,
        latest=_latest_check(plan, health),
    )
    status.model_status = _model_status(plan, predictor, health, status, previous)
    return status


def refused_status(
    error: errors.ModelhostError,
    previous: InferenceServiceStatus | None,
    generation: int | None,
) -> InferenceServiceStatus:
    """The status of an object the planner refused: what ran before, and Ready=False why.

    The objects of the last valid spec keep running (a Kubernetes API server with KServe's
    webhook would have refused the change; here it is already stored), so the components'
    rollout is kept as it was; the message names the field.
    """
    reason = _refusal_reason(error)
    status = (
        msgspec.structs.replace(previous)
        if previous is not None
        else InferenceServiceStatus(components={})
    )
    status.observed_generation = generation
    status.conditions = conditions(
        [
            Check("PredictorReady", False, reason, str(error)),
            Check("Ready", False, reason, str(error)),
        ],
        [c for c in previous.conditions or () if c.type in ("PredictorReady", "Ready")]
        if previous is not None
        else None,
    )
    model = dict(status.model_status or {})
    states = dict(model.get("states") or {})
    states["targetModelState"] = "FailedToLoad"
    states.setdefault("activeModelState", "Pending")
    failure_reason = (
        error.failure_reason if isinstance(error, RuntimeSelectionError) else "InvalidPredictorSpec"
    )
    model.update(
        transitionStatus="InvalidSpec",
        states=states,
        lastFailureInfo=_failure_info(
            model.get("lastFailureInfo"), {"reason": failure_reason, "message": str(error)}
        ),
    )
    status.model_status = model
    return status


def parse_status(document: Mapping[str, Any] | None) -> InferenceServiceStatus | None:
    """A live object's ``status`` as the typed status, or None when it has none (or garbage)."""
    if not document:
        return None
    try:
        return msgspec.convert(dict(document), InferenceServiceStatus, strict=False)
    except msgspec.ValidationError:
        return None


def status_patch(
    live: Mapping[str, Any] | None, status: InferenceServiceStatus | InferenceGraphStatus
) -> dict[str, Any] | None:
    """The JSON merge patch from the live ``status`` to ``status`` (None: nothing changed)."""
    new: dict[str, Any] = msgspec.to_builtins(status)
    patch = _merge_patch(dict(live or {}), new)
    return patch or None


# -- the component checks ---------------------------------------------------------------


def _component_check(
    component: ComponentPlan,
    rollout: ComponentStatusSpec,
    health: Mapping[str, RevisionHealth],
    stopped: bool,
) -> Check:
    condition = COMPONENT_CONDITIONS[component.component]
    if stopped:
        return Check(condition, False, "Stopped", "the service is stopped")
    serving = [t.revision_name for t in rollout.traffic or () if t.revision_name and t.percent]
    if any(name in health and health[name].ready for name in serving):
        return Check(condition, True)
    why = _why_not_ready(component.revision.name, health)
    for name in serving:
        if why.reason == "RevisionMissing" and name in health:
            why = _why_not_ready(name, health)
    return why._replace(type=condition)


def _latest_check(plan: ServicePlan, health: Mapping[str, RevisionHealth]) -> Check | None:
    predictor = plan.component("predictor")
    if predictor is None:
        return None
    newest = health.get(predictor.revision.name)
    if newest is not None and newest.ready:
        return None
    return _why_not_ready(predictor.revision.name, health)


def _why_not_ready(revision: str, health: Mapping[str, RevisionHealth]) -> Check:
    found = health.get(revision)
    if found is None:
        return Check("", False, "RevisionMissing", f"revision {revision} is being created")
    return Check("", False, found.reason or "RevisionMissing", found.message)


# -- modelStatus --------------------------------------------------------------------------


def _model_status(
    plan: ServicePlan,
    predictor: ComponentStatusSpec | None,
    health: Mapping[str, RevisionHealth],
    status: InferenceServiceStatus,
    previous: InferenceServiceStatus | None,
) -> dict[str, Any]:
    """KServe's PropagateModelStatus, read from the predictor's newest revision."""
    before: dict[str, Any] = dict((previous.model_status or {}) if previous is not None else {})
    states = dict(before.get("states") or {})
    states.setdefault("activeModelState", "Pending")
    model: dict[str, Any] = {}
    if before.get("lastFailureInfo"):
        model["lastFailureInfo"] = before["lastFailureInfo"]
    component = plan.component("predictor")
    newest = health.get(component.revision.name) if component is not None else None
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or ()) and bool(
        predictor and predictor.latest_created_revision == predictor.latest_ready_revision
    )
    if newest is not None and newest.model_failure is not None and not newest.ready:
        failure = newest.model_failure
        info: dict[str, Any] = {
            "location": failure.location,
            "reason": "ModelLoadFailed",
            "message": failure.message,
            "modelRevisionName": newest.revision,
        }
        if failure.exit_code is not None:
            info["exitCode"] = failure.exit_code
        model["lastFailureInfo"] = _failure_info(before.get("lastFailureInfo"), info)
        target, transition = "FailedToLoad", "BlockedByFailedLoad"
    elif newest is not None and newest.ready and ready:
        target, transition = "Loaded", "UpToDate"
        states["activeModelState"] = "Loaded"
        model["copies"] = {"failedCopies": 0, "totalCopies": newest.available_replicas}
    elif newest is not None and newest.loading:
        target, transition = "Loading", "InProgress"
    else:
        target, transition = "Pending", "InProgress"
    states["targetModelState"] = target
    model["states"] = states
    model["transitionStatus"] = transition
    return model


def _failure_info(previous: Any, info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with a time: the previous one's when it reports the same failure again."""
    same = isinstance(previous, dict) and all(previous.get(k) == v for k, v in info.items())
    if same and previous.get("time"):
        return {**info, "time": previous["time"]}
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {**info, "time": now.isoformat().replace("+00:00", "Z")}


def _refusal_reason(error: errors.ModelhostError) -> str:
    if isinstance(error, RuntimeSelectionError):
        return error.failure_reason
    if isinstance(error, ParseError):
        return "InvalidSpec"
    if isinstance(error, errors.Unsupported):
        return "Unsupported"
    return "InvalidSpec"


# -- reading pods -------------------------------------------------------------------------


def _pod_problem(pod: Mapping[str, Any]) -> tuple[str, str, bool] | None:
    """(reason, message, failed) for the first container that cannot start, or scheduling."""
    name = _meta(pod).get("name", "")
    status = pod.get("status") or {}
    for kind in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(kind) or ():
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FAILING_WAIT_REASONS:
                text = f"container {container.get('name')} of pod {name}: {reason}"
                if waiting.get("message"):
                    text += f": {waiting['message']}"
                last = (container.get("lastState") or {}).get("terminated") or {}
                if last:
                    text += f" (last exit code {last.get('exitCode')}"
                    detail = last.get("message") or last.get("reason")
                    text += f": {detail})" if detail else ")"
                return reason, text, True
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return reason, f"pod {name}: {condition.get('message') or reason}", False
    return None


def _model_failure(pod: Mapping[str, Any]) -> ModelFailure | None:
    """KServe's ModelLoadFailed: the initializer or the model server crashed or exited."""
    status = pod.get("status") or {}
    for kind in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(kind) or ():
            if container.get("name") not in _MODEL_CONTAINERS:
                continue
            state = container.get("state") or {}
            terminated = state.get("terminated") or {}
            if terminated.get("reason") == "Error":
                return ModelFailure(
                    _meta(pod).get("name", ""),
                    terminated.get("message") or "exited with an error",
                    terminated.get("exitCode"),
                )
            if (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
                last = (container.get("lastState") or {}).get("terminated") or {}
                return ModelFailure(
                    _meta(pod).get("name", ""),
                    last.get("message") or last.get("reason") or "crash loop",
                    last.get("exitCode"),
                )
    return None


def _initializer_running(pod: Mapping[str, Any]) -> bool:
    for container in (pod.get("status") or {}).get("initContainerStatuses") or ():
        if container.get("name") == INITIALIZER_CONTAINER:
            return (container.get("state") or {}).get("running") is not None
    return False


# -- small helpers ------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = _meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _is(condition: Mapping[str, Any] | None, value: str) -> bool:
    return condition is not None and condition.get("status") == value


def _merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: what turns ``old`` into ``new`` (a removed key is null, lists are replaced)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = _merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    return patch
