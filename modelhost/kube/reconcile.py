"""One reconcile of an InferenceService, decided without I/O: what to apply, scale and delete.

Given the object (as ``modelhost.control`` parses it), the runtimes that exist and what the
operator owns in the cluster now, :func:`reconcile` plans it (``control.plan``, the one
planner), reads the revisions' health, writes KServe's status, and renders the plan as it can
be served *now*: the newest revision's share of traffic goes to the newest *ready* revision,
as Knative routes it, so a rollout never sends requests to pods that cannot answer yet. The
result lists the manifests to apply (``render_plan``'s, each owned by the InferenceService),
the owned objects to delete (revisions no longer needed, kinds no longer rendered) and the
older revisions' Deployments to scale (the one a rollback returns to is kept at zero
replicas, as Knative keeps old revisions). The operator carries it out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelhost import control, errors
from modelhost.control.objects import (
    AnyRuntime,
    ComponentStatusSpec,
    InferenceGraph,
    InferenceService,
    InferenceServiceStatus,
)
from modelhost.control.plan_types import ServicePlan, TrafficSplit
from modelhost.kube.labels import COMPONENT, REVISION
from modelhost.kube.render import render_plan
from modelhost.kube.settings import KubeSettings
from modelhost.kube.status import observe_revisions, refused_status, service_status

__all__ = [
    "ObjectRef",
    "Reconciliation",
    "Scale",
    "is_owned_by",
    "needs_apply",
    "owner_reference",
    "reconcile",
    "serving_plan",
    "with_owner",
]


@dataclasses.dataclass(frozen=True, order=True)
class ObjectRef:
    """Which object: its apiVersion, kind, namespace ('' for cluster objects) and name."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or ""),
            str(meta.get("name", "")),
        )

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclasses.dataclass(frozen=True)
class Scale:
    """An older revision's Deployment set to ``replicas`` (0: kept for a rollback, idle)."""

    target: ObjectRef
    replicas: int


@dataclasses.dataclass(frozen=True)
class Reconciliation:
    """What one reconcile decided; ``error`` is the planner's refusal of an invalid object.

    When the object is refused, nothing is applied, scaled or deleted: what the last valid
    spec started keeps serving, and the status says why the new spec is not.
    """

    status: InferenceServiceStatus
    plan: ServicePlan | None = None
    apply: tuple[dict[str, Any], ...] = ()
    scale: tuple[Scale, ...] = ()
    delete: tuple[ObjectRef, ...] = ()
    error: errors.ModelhostError | None = None


def reconcile(
    isvc: InferenceService,
    runtimes: Sequence[AnyRuntime] | None,
    owned: Iterable[Mapping[str, Any]],
    settings: KubeSettings,
    *,
    pods: Iterable[Mapping[str, Any]] = (),
    previous: InferenceServiceStatus | None = None,
) -> Reconciliation:
    """Decide one reconcile of ``isvc`` (which must carry its ``metadata.uid``).

    ``owned`` are the live objects that ``isvc`` controls (objects without its
    ownerReference are ignored); ``pods`` its pods; ``previous`` the status recorded so far
    (default: ``isvc.status``).
    """
    previous = previous if previous is not None else isvc.status
    uid = isvc.metadata.uid or ""
    live = [obj for obj in owned if is_owned_by(obj, uid)]
    try:
        plan = control.plan(isvc, runtimes, config=settings.planner, previous=previous)
        health = observe_revisions(live, pods)
        status = service_status(plan, health, previous)
        served = serving_plan(plan, status.components or {})
        manifests = render_plan(served, settings)
    except (errors.InvalidInput, errors.Unsupported) as exc:
        generation = isvc.metadata.generation
        return Reconciliation(status=refused_status(exc, previous, generation), error=exc)
    owner = owner_reference(isvc)
    apply = tuple(with_owner(manifest, owner) for manifest in manifests)
    rendered = {ObjectRef.of(m) for m in apply}
    keep = _revisions_to_keep(served, status.components or {})
    delete: list[ObjectRef] = []
    scale: list[Scale] = []
    rendered_replicas = {
        ObjectRef.of(m): (m.get("spec") or {}).get("replicas")
        for m in apply
        if m["kind"] == "Deployment"
    }
    for obj in live:
        ref = ObjectRef.of(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        component = served.component(str(labels.get(COMPONENT, "")))
        revision = labels.get(REVISION)
        if ref in rendered_replicas:
            # The newest revision: its own replicas, or its autoscaler's. An autoscaler cannot
            # wake a Deployment left at zero (a revision idled earlier, now newest again).
            minimum = component.scaling.min_replicas if component is not None else 0
            asleep = rendered_replicas[ref] is None and _replicas(obj) == 0
            if asleep and minimum > 0 and not plan.stopped:
                scale.append(Scale(ref, minimum))
            continue
        if ref in rendered:
            continue
        if (
            ref.kind != "Deployment"
            or component is None
            or revision not in keep[component.component]
        ):
            delete.append(ref)
            continue
        # An older revision's Deployment: it serves its traffic share, or idles at zero.
        serving = revision in component.revision_names and not plan.stopped
        replicas = max(1, component.scaling.min_replicas) if serving else 0
        if _replicas(obj) != replicas:
            scale.append(Scale(ref, replicas))
    return Reconciliation(
        status=status,
        plan=plan,
        apply=apply,
        scale=tuple(sorted(scale, key=lambda s: s.target)),
        delete=tuple(sorted(delete)),
    )


def serving_plan(plan: ServicePlan, components: Mapping[str, ComponentStatusSpec]) -> ServicePlan:
    """``plan`` with each component's traffic as it is served now (``status.traffic``).

    Until the newest revision is ready, its share goes to the latest ready one (Knative's
    ``latestRevision: true``); two shares that land on one revision become one.
    """
    served = []
    for component in plan.components:
        status = components.get(component.component)
        if status is None or not status.traffic:
            served.append(component)
            continue
        splits: list[TrafficSplit] = []
        for target in status.traffic:
            split = TrafficSplit(
                revision=target.revision_name or component.revision.name,
                percent=target.percent or 0,
                latest=bool(target.latest_revision),
                tag=target.tag,
            )
            same = next(
                (
                    i
                    for i, s in enumerate(splits)
                    if (s.revision, s.tag) == (split.revision, split.tag)
                ),
                None,
            )
            if same is None:
                splits.append(split)
            else:
                merged = splits[same]
                splits[same] = dataclasses.replace(
                    merged,
                    percent=merged.percent + split.percent,
                    latest=merged.latest or split.latest,
                )
        served.append(dataclasses.replace(component, traffic=tuple(splits)))
    return dataclasses.replace(plan, components=tuple(served))


def owner_reference(owner: InferenceService | InferenceGraph) -> dict[str, Any]:
    """The controller ownerReference to ``owner``: the garbage collector deletes what it owns."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` is controlled by the object whose uid is ``uid``."""
    references = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return bool(uid) and any(
        isinstance(r, Mapping) and r.get("uid") == uid and r.get("controller") for r in references
    )


def needs_apply(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether applying ``desired`` would change ``live``.

    Every field ``desired`` sets must be there with that value; the API server's defaults and
    other managers' fields may add to it (in maps, and inside list items of the same length).
    """
    return live is None or not _contains(live, desired)


def _contains(live: Any, desired: Any) -> bool:
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and _contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(_contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def _replicas(deployment: Mapping[str, Any]) -> int:
    """A live Deployment's desired replicas (Kubernetes defaults a missing count to 1)."""
    return int((deployment.get("spec") or {}).get("replicas", 1))


def with_owner(manifest: Mapping[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` with ``owner`` as its one ownerReference."""
    metadata = dict(manifest.get("metadata") or {})
    metadata["ownerReferences"] = [dict(owner)]
    return {**manifest, "metadata": metadata}


def _revisions_to_keep(
    plan: ServicePlan, components: Mapping[str, ComponentStatusSpec]
) -> dict[str, set[str]]:
    """Per component: the revisions that serve, and those a rollback or rollout returns to."""
    keep: dict[str, set[str]] = {}
    for component in plan.components:
        names = set(component.revision_names)
        status = components.get(component.component)
        if status is not None:
            names.update(
                name
                for name in (
                    status.latest_ready_revision,
                    status.latest_rolledout_revision,
                    status.previous_rolledout_revision,
                )
                if name
            )
        keep[component.component] = names
    return keep
