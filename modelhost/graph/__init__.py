"""The InferenceGraph router: KServe's Sequence, Switch, Ensemble and Splitter nodes.

:class:`GraphRouter` runs a request through a graph's nodes; its steps reach services through
a :class:`StepCaller` (:class:`HttpStepCaller` on the network) at the URLs a
:class:`ServiceResolver` gives; step conditions are GJSON paths (:mod:`modelhost.control.gjson`).
:class:`GraphServer` is the router process (``modelhost graph``): the graph of a
:class:`RouterConfig` behind :class:`GraphFront`, its HTTP front.
"""

from __future__ import annotations

from modelhost.control.gjson import Condition, ConditionError, compile_condition, gjson_get
from modelhost.graph.caller import HttpCallerSettings, HttpStepCaller, StepAnswer, StepCaller
from modelhost.graph.config import (
    RouterConfig,
    ServiceEntry,
    load_router_config,
    parse_router_config,
)
from modelhost.graph.errors import (
    GraphError,
    GraphSpecError,
    GraphTimedOut,
    StepAnswerInvalid,
    StepError,
    StepNotDeployed,
    StepTimedOut,
    StepUnreachable,
)
from modelhost.graph.front import FrontSettings, GraphFront
from modelhost.graph.metrics import GraphMetrics, RouterLoad
from modelhost.graph.resolve import (
    GatewayResolver,
    ServiceResolver,
    ServiceTableResolver,
    StepTarget,
    predict_path,
)
from modelhost.graph.router import (
    GraphResponse,
    GraphRouter,
    Payload,
    RouterSettings,
    request_protocol,
)
from modelhost.graph.server import (
    GraphServer,
    GraphServerSettings,
    ServerTimeouts,
    run_graph_server,
    server_timeouts,
)

__all__ = [
    "Condition",
    "ConditionError",
    "FrontSettings",
    "GatewayResolver",
    "GraphError",
    "GraphFront",
    "GraphMetrics",
    "GraphResponse",
    "GraphRouter",
    "GraphServer",
    "GraphServerSettings",
    "GraphSpecError",
    "GraphTimedOut",
    "HttpCallerSettings",
    "HttpStepCaller",
    "Payload",
    "RouterConfig",
    "RouterLoad",
    "RouterSettings",
    "ServerTimeouts",
    "ServiceEntry",
    "ServiceResolver",
    "ServiceTableResolver",
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
    "load_router_config",
    "parse_router_config",
    "predict_path",
    "request_protocol",
    "run_graph_server",
    "server_timeouts",
]
