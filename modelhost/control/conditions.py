"""KServe's status conditions of a service, from what an executor saw of its components.

Both executors (the embedded platform and the Kubernetes operator) write them, so they live
here, free of I/O, and say the same thing for the same observations.

Each component reports one check (``PredictorReady``, ``TransformerReady``,
``ExplainerReady``); the service adds ``IngressReady`` and ``LatestDeploymentReady``, and
``Ready`` holds when every check but ``LatestDeploymentReady`` does (a service that still
serves its previous revision during a rollout is Ready). A condition's transition time
moves only when its status flips.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Literal, NamedTuple

from modelhost.control.objects import ComponentStatusSpec, Condition

__all__ = ["COMPONENT_CONDITIONS", "Check", "conditions", "service_conditions"]

COMPONENT_CONDITIONS = {
    "predictor": "PredictorReady",
    "transformer": "TransformerReady",
    "explainer": "ExplainerReady",
}


class Check(NamedTuple):
    type: str
    ok: bool
    reason: str | None = None
    message: str | None = None


def service_conditions(
    components: Sequence[Check],
    *,
    stopped: bool,
    predictor: ComponentStatusSpec | None,
    previous: Sequence[Condition] | None,
    latest: Check | None = None,
) -> list[Condition]:
    """The service's conditions, given its components' checks.

    ``latest`` says why the predictor's newest revision is not ready, if it is not: while
    the previous revision serves, the service is Ready and only this condition tells.
    """
    checks = list(components)
    checks.append(Check("IngressReady", not stopped, "Stopped" if stopped else None))
    latest_ready = bool(
        predictor and predictor.latest_ready_revision == predictor.latest_created_revision
    )
    if latest_ready or latest is None:
        checks.append(Check("LatestDeploymentReady", latest_ready))
    else:
        checks.append(latest._replace(type="LatestDeploymentReady", ok=False))
    failing = [c for c in checks if not c.ok and c.type != "LatestDeploymentReady"]
    reason = "Stopped" if stopped else (failing[0].reason if failing else None)
    checks.append(Check("Ready", not failing, reason, failing[0].message if failing else None))
    return conditions(checks, previous)


def conditions(
    checks: Sequence[Check], previous: Sequence[Condition] | None = None
) -> list[Condition]:
    """KServe's conditions, sorted by type; a transition time moves only on a flip."""
    before = {c.type: c for c in previous or ()}
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    found = []
    for check in checks:
        value: Literal["True", "False"] = "True" if check.ok else "False"
        old = before.get(check.type)
        when = old.last_transition_time if old is not None and old.status == value else now
        found.append(
            Condition(
                type=check.type,
                status=value,
                last_transition_time=when,
                reason=None if check.ok else check.reason,
                message=None if check.ok else check.message,
            )
        )
    return sorted(found, key=lambda c: c.type)
