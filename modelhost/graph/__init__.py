"""The InferenceGraph router: KServe's Sequence, Switch, Ensemble and Splitter nodes.

:class:`GraphRouter` runs a request through a graph's nodes; its steps reach services through
a :class:`StepCaller` (:class:`HttpStepCaller` on the network) at the URLs a
:class:`ServiceResolver` gives; step conditions are GJSON paths (:mod:`modelhost.control.gjson`).
"""

from __future__ import annotations

from modelhost.control.gjson import Condition, ConditionError, compile_condition, gjson_get
from modelhost.graph.caller import HttpCallerSettings, HttpStepCaller, StepAnswer, StepCaller
from modelhost.graph.errors import (
    GraphError,
    GraphSpecError,
    StepAnswerInvalid,
    StepError,
    StepNotDeployed,
    StepTimedOut,
    StepUnreachable,
)
from modelhost.graph.metrics import GraphMetrics
from modelhost.graph.resolve import GatewayResolver, ServiceResolver, StepTarget, predict_path
from modelhost.graph.router import (
    GraphResponse,
    GraphRouter,
    Payload,
    RouterSettings,
    request_protocol,
)

__all__ = [
    "Condition",
    "ConditionError",
    "GatewayResolver",
    "GraphError",
    "GraphMetrics",
    "GraphResponse",
    "GraphRouter",
    "GraphSpecError",
    "HttpCallerSettings",
    "HttpStepCaller",
    "Payload",
    "RouterSettings",
    "ServiceResolver",
    "StepAnswer",
    "StepAnswerInvalid",
    "StepCaller",
    "StepError",
    "StepNotDeployed",
    "StepTarget",
    "StepTimedOut",
    "StepUnreachable",
    "compile_condition",
    "gjson_get",
    "predict_path",
    "request_protocol",
]
