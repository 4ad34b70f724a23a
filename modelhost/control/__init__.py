"""The control plane: KServe's API objects, defaulting, validation, runtime choice, the planner.

The control path is parse → default → validate → select runtime → plan; an executor carries
out the :class:`ServicePlan` and writes status back with :func:`propagate_rollout`. An
InferenceGraph goes parse → :func:`apply_graph_defaults` → :func:`validate_inference_graph`, and
:func:`graph_wait_reason` says which InferenceServices it still waits for; :func:`plan_graph`
plans its router. Nothing here does I/O, so the embedded platform and the Kubernetes operator
share it unchanged.
"""

from __future__ import annotations

from modelhost.control.config import PlatformConfig
from modelhost.control.defaults import apply_defaults
from modelhost.control.errors import (
    FieldError,
    ParseError,
    RuntimeSelectionError,
    ValidationError,
)
from modelhost.control.graph_plan import ROUTER_COMPONENT, graph_router_config, plan_graph
from modelhost.control.graph_validation import (
    apply_graph_defaults,
    graph_services,
    graph_wait_reason,
    validate_inference_graph,
)
from modelhost.control.objects import (
    ClusterServingRuntime,
    InferenceGraph,
    InferenceGraphSpec,
    InferenceGraphStatus,
    InferenceRouter,
    InferenceService,
    InferenceServiceStatus,
    InferenceStep,
    RouterTimeouts,
    ServingRuntime,
)
from modelhost.control.parse import dump_yaml, parse_documents, parse_object, to_dict
from modelhost.control.plan import plan
from modelhost.control.plan_types import (
    BatcherPlan,
    ComponentPlan,
    LoggerPlan,
    ProcessSpec,
    Revision,
    Route,
    ScalingPolicy,
    ServicePlan,
    TrafficSplit,
)
from modelhost.control.runtime_validation import validate_serving_runtime
from modelhost.control.runtimes import (
    SelectedRuntime,
    builtin_runtimes,
    select_runtime,
    supporting_runtimes,
)
from modelhost.control.status import effective_traffic, plan_status, propagate_rollout
from modelhost.control.user_code import user_code
from modelhost.control.validation import validate_inference_service

__all__ = [
    "ROUTER_COMPONENT",
    "BatcherPlan",
    "ClusterServingRuntime",
    "ComponentPlan",
    "FieldError",
    "InferenceGraph",
    "InferenceGraphSpec",
    "InferenceGraphStatus",
    "InferenceRouter",
    "InferenceService",
    "InferenceServiceStatus",
    "InferenceStep",
    "LoggerPlan",
    "ParseError",
    "PlatformConfig",
    "ProcessSpec",
    "Revision",
    "Route",
    "RouterTimeouts",
    "RuntimeSelectionError",
    "ScalingPolicy",
    "SelectedRuntime",
    "ServicePlan",
    "ServingRuntime",
    "TrafficSplit",
    "ValidationError",
    "apply_defaults",
    "apply_graph_defaults",
    "builtin_runtimes",
    "dump_yaml",
    "effective_traffic",
    "graph_router_config",
    "graph_services",
    "graph_wait_reason",
    "parse_documents",
    "parse_object",
    "plan",
    "plan_graph",
    "plan_status",
    "propagate_rollout",
    "select_runtime",
    "supporting_runtimes",
    "to_dict",
    "user_code",
    "validate_inference_graph",
    "validate_inference_service",
    "validate_serving_runtime",
]
