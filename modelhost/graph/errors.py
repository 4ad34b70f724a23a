"""How a graph request fails when a step gives no usable answer, naming the node and step.

A step's own non-2xx answer is not an exception: it is an answer (Soft steps pass it on). These
are the failures to get one: the step's service cannot be reached (502), does not answer in
``routerTimeouts.serviceClient`` (504), is not deployed (503), or answers what the node cannot
use (502). The step caller raises them with the cause only; the router adds where
(:meth:`StepError.at`), so the client reads ``node root, step 2 (xgboost-iris): ...``.

    ModelhostError
    └── GraphError                  500
        ├── StepError               500  (located: node, step number, step label)
        │   ├── StepUnreachable     502  UNAVAILABLE
        │   ├── StepTimedOut        504  DEADLINE_EXCEEDED
        │   ├── StepNotDeployed     503  UNAVAILABLE
        │   └── StepAnswerInvalid   502  INTERNAL
        ├── GraphSpecError          500  (a graph the router cannot run: no root, a cycle)
        └── GraphTimedOut           504  DEADLINE_EXCEEDED  (routerTimeouts.serverWrite passed)
"""

from __future__ import annotations

from typing import TypeVar

from modelhost.errors import ModelhostError

__all__ = [
    "GraphError",
    "GraphSpecError",
    "GraphTimedOut",
    "StepAnswerInvalid",
    "StepError",
    "StepNotDeployed",
    "StepTimedOut",
    "StepUnreachable",
    "step_location",
]

_E = TypeVar("_E", bound="StepError")


def step_location(node: str, number: int, label: str) -> str:
    """``node root, step 2 (xgboost-iris)``: steps counted from 1, as a person reads YAML."""
    return f"node {node}, step {number} ({label})"


class GraphError(ModelhostError):
    """Base of the router's own failures."""


class GraphSpecError(GraphError):
    """The graph cannot be run as written (checked when the router is built)."""


class GraphTimedOut(GraphError):
    """The graph did not produce its answer within ``routerTimeouts.serverWrite``."""

    status_code = 504
    grpc_status = "DEADLINE_EXCEEDED"


class StepError(GraphError):
    """A step gave no usable answer; once located, the message starts with its node and step."""

    def __init__(
        self, cause: str, *, node: str | None = None, number: int = 0, label: str = ""
    ) -> None:
        self.cause = cause
        self.node = node
        self.number = number
        self.label = label
        where = f"{step_location(node, number, label)}: " if node is not None else ""
        super().__init__(f"{where}{cause}")

    @property
    def located(self) -> bool:
        return self.node is not None

    def at(self: _E, node: str, number: int, label: str) -> _E:
        """This error placed at a step; one already placed (in a nested node) keeps its place."""
        if self.located:
            return self
        return type(self)(self.cause, node=node, number=number, label=label)


class StepUnreachable(StepError):
    """The step's service refused or dropped the connection, or its name did not resolve."""

    status_code = 502
    grpc_status = "UNAVAILABLE"


class StepTimedOut(StepError):
    """The step did not answer within the graph's ``routerTimeouts.serviceClient``."""

    status_code = 504
    grpc_status = "DEADLINE_EXCEEDED"


class StepNotDeployed(StepError):
    """The step names an InferenceService that is not deployed (or not ready) now."""

    status_code = 503
    grpc_status = "UNAVAILABLE"


class StepAnswerInvalid(StepError):
    """The step answered something its node cannot use (an Ensemble needs a JSON object)."""

    status_code = 502
