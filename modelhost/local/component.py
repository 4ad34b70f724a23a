"""One component of a running InferenceService: its revisions and how its traffic splits now."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelhost.control import ComponentPlan
from modelhost.local.revision import RevisionRunner
from modelhost.local.routing import WeightedChoice
from modelhost.transport.http1_proxy import InProcess

__all__ = ["ComponentState"]


@dataclass
class ComponentState:
    """Kept across reconciles; ``plan`` and ``split`` are replaced by each one."""

    namespace: str
    service: str
    component: str
    plan: ComponentPlan
    runners: dict[str, RevisionRunner] = field(default_factory=dict)
    split: WeightedChoice[RevisionRunner] = field(default_factory=lambda: WeightedChoice([]))
    # The loopback port of this component's own address (a Kubernetes Service's): what a
    # transformer's --predictor_host names.
    service_port: int = 0
    # Knative's tag routes (serving.kserve.io/enable-tag-routing): host → this component
    # pinned to the tagged revision.
    tagged: dict[str, ComponentState] = field(default_factory=dict)
    # A graph's router run in the gateway's process: requests go to it, not to replicas.
    in_process: InProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service_port}"

    def choose(self) -> RevisionRunner | None:
        """The revision for the next request, by the current traffic shares."""
        return self.split.next()
