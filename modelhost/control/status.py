"""A component's rollout status after a plan is carried out: KServe's ``PropagateStatus``.

The planner reads ``latestRolledoutRevision`` to split canary traffic; this module is where
it is written, with KServe's Knative-mode rules: a revision is *rolled out* once it is ready
and takes 100% of the traffic (the one it replaces becomes ``previousRolledoutRevision``),
and a rolled-out revision that is given less than 100% again is a rollback, so the previous
one is the rolled-out revision again. Both executors call it; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Collection

from modelhost.control.objects import (
    Addressable,
    ComponentStatusSpec,
    InferenceServiceStatus,
    TrafficTarget,
)
from modelhost.control.plan_types import ComponentPlan, ServicePlan

__all__ = ["effective_traffic", "plan_status", "propagate_rollout"]


def plan_status(plan: ServicePlan, generation: int) -> InferenceServiceStatus:
    """The part of KServe's status the plan alone decides: URLs, mode, the runtime chosen.

    Each executor adds the components' rollout and the conditions from what it observed;
    ``generation`` is the object generation this status observes.
    """
    status = InferenceServiceStatus(
        observed_generation=generation,
        url=plan.url,
        address=Addressable(url=plan.address_url),
        components={},
        deployment_mode=plan.deployment_mode,
    )
    if plan.runtime_kind == "ServingRuntime":
        status.serving_runtime_name = plan.runtime
    elif plan.runtime_kind == "ClusterServingRuntime":
        status.cluster_serving_runtime_name = plan.runtime
    return status


def effective_traffic(
    component: ComponentPlan, ready: Collection[str], latest_ready: str | None
) -> list[TrafficTarget]:
    """The traffic as served now: the latest's share goes to the newest *ready* revision.

    ``ready`` holds the names of the revisions that have a ready replica (or may scale from
    zero); ``latest_ready`` is the newest revision that was ready before this plan.
    """
    newest = component.revision.name
    serving_latest = newest if newest in ready else latest_ready
    targets: list[TrafficTarget] = []
    for split in component.traffic:
        revision = (serving_latest or split.revision) if split.latest else split.revision
        targets.append(
            TrafficTarget(
                revision_name=revision,
                latest_revision=split.latest,
                percent=split.percent,
                tag=split.tag,
            )
        )
    return targets


def propagate_rollout(
    previous: ComponentStatusSpec | None, component: ComponentPlan, ready: Collection[str]
) -> ComponentStatusSpec:
    """The component's status once ``component`` is carried out and ``ready`` are ready."""
    status = ComponentStatusSpec(
        latest_ready_revision=previous.latest_ready_revision if previous else None,
        latest_rolledout_revision=previous.latest_rolledout_revision if previous else None,
        previous_rolledout_revision=previous.previous_rolledout_revision if previous else None,
    )
    newest = component.revision.name
    status.latest_created_revision = newest
    if newest in ready:
        status.latest_ready_revision = newest
    traffic = effective_traffic(component, ready, status.latest_ready_revision)
    status.traffic = traffic
    status.url = component.url
    latest_ready = status.latest_ready_revision
    for target in traffic:
        if not target.latest_revision or target.revision_name != latest_ready:
            continue
        if status.latest_rolledout_revision != latest_ready:
            if target.percent == 100:
                # The latest ready revision takes everything: it is rolled out.
                status.previous_rolledout_revision = status.latest_rolledout_revision
                status.latest_rolledout_revision = latest_ready
        elif (
            latest_ready == newest
            and (target.percent or 0) < 100
            and status.previous_rolledout_revision
        ):
            # A rolled-out revision given less than 100% again is a rollback. KServe first
            # splits over that same revision and reverts here on the next reconcile; the
            # planner sends the rest to the previous revision at once, so no total is checked.
            status.latest_rolledout_revision = status.previous_rolledout_revision
    return status
