"""KServe's ``serving.kserve.io/v1alpha1`` InferenceGraph, field for field.

Field names and nesting follow KServe's Go types (``pkg/apis/serving/v1alpha1/
inference_graph.go``) and its CRD: a graph is a map of named router nodes, each a
``routerType`` and its ``steps``; a step targets exactly one of another node, an
InferenceService or a URL. The pod-level fields (``resources``, ``affinity``, ``tolerations``,
...) describe the router's own replicas. The status is written by the executors and is lenient.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from modelhost.control.objects.core import KubeObject, ObjectMeta, ResourceRequirements
from modelhost.control.objects.inference_service import Condition, StatusObject

__all__ = [
    "DEPENDENCIES",
    "HARD",
    "REQUEST_DATA",
    "RESPONSE_DATA",
    "ROOT_NODE",
    "ROUTER_TYPES",
    "SOFT",
    "InferenceGraph",
    "InferenceGraphSpec",
    "InferenceGraphStatus",
    "InferenceRouter",
    "InferenceStep",
    "RouterTimeouts",
]

# The node a request enters the graph at (KServe's GraphRootNodeName).
ROOT_NODE = "root"
# KServe's InferenceRouterType values, in its order.
ROUTER_TYPES: tuple[str, ...] = ("Sequence", "Splitter", "Ensemble", "Switch")
SOFT = "Soft"
HARD = "Hard"
DEPENDENCIES: tuple[str, ...] = (SOFT, HARD)
# What a step is sent: the graph's original request, or the previous step's response.
REQUEST_DATA = "$request"
RESPONSE_DATA = "$response"


class InferenceStep(KubeObject):
    """One step of a node: its target (one of three), and how the node uses it.

    KServe's webhook writes no default into ``data`` or ``dependency``; its router sends a step
    the previous response only when ``data`` is ``$response`` (else the node's input), and
    stops on a failed step only when ``dependency`` is ``Hard``. :attr:`data_source` and
    :attr:`hard` say the same about a step.
    """

    name: str | None = None
    node_name: str | None = None
    service_name: str | None = None
    service_url: str | None = None
    data: str | None = None
    # Newer KServe: the previous response's ``predictions`` become this step's ``instances``.
    map_predictions_to_instances: bool | None = None
    weight: int | None = None
    condition: str | None = None
    dependency: str | None = None

    @property
    def targets(self) -> dict[str, str]:
        """The targets this step sets, by their KServe field name (valid steps set one)."""
        named = {
            "nodeName": self.node_name,
            "serviceName": self.service_name,
            "serviceUrl": self.service_url,
        }
        return {field: value for field, value in named.items() if value}

    @property
    def data_source(self) -> str:
        """``$response`` when the step asks for the previous response, else ``$request``."""
        return RESPONSE_DATA if self.data == RESPONSE_DATA else REQUEST_DATA

    @property
    def hard(self) -> bool:
        """Whether a non-2xx answer from this step ends the graph with that answer."""
        return self.dependency == HARD


class InferenceRouter(KubeObject):
    """A node: how its steps are used (``Sequence``, ``Splitter``, ``Ensemble``, ``Switch``)."""

    router_type: str
    steps: list[InferenceStep] | None = None


class RouterTimeouts(KubeObject):
    """``spec.routerTimeouts``, in seconds: the router's HTTP server, and its calls to steps."""

    server_read: int | None = None
    server_write: int | None = None
    server_idle: int | None = None
    service_client: int | None = None


class InferenceGraphSpec(KubeObject):
    """``spec``: the nodes, then the router's own pod and scaling (as a component's)."""

    nodes: dict[str, InferenceRouter] = msgspec.field(default_factory=dict)
    resources: ResourceRequirements | None = None
    affinity: Any = None
    timeout: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_target: int | None = None
    scale_metric: str | None = None
    tolerations: list[Any] | None = None
    node_selector: dict[str, str] | None = None
    node_name: str | None = None
    service_account_name: str | None = None
    router_timeouts: RouterTimeouts | None = None


class InferenceGraphStatus(StatusObject):
    """Knative's duck Status (conditions, observedGeneration, annotations), the URL, the mode."""

    observed_generation: int | None = None
    conditions: list[Condition] | None = None
    annotations: dict[str, str] | None = None
    url: str | None = None
    deployment_mode: str | None = None


class InferenceGraph(KubeObject):
    API_VERSION: ClassVar[str] = "serving.kserve.io/v1alpha1"
    KIND: ClassVar[str] = "InferenceGraph"

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: InferenceGraphSpec = msgspec.field(default_factory=InferenceGraphSpec)
    status: InferenceGraphStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations or {}
