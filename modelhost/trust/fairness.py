"""Group fairness as TrustyAI defines it: statistical parity difference and disparate impact.

With ``P(fav | g)`` the share of rows of group ``g`` whose outcome is favourable,
``SPD = P(fav | unprivileged) - P(fav | privileged)`` (fair near 0, default bounds 0 ± 0.1)
and ``DIR = P(fav | unprivileged) / P(fav | privileged)`` (fair near 1, bounds 1 ± 0.2).
Both are computed over the model's most recent ``batchSize`` rows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.trust.store import TrustStore

__all__ = [
    "DEFINITIONS",
    "FAIRNESS_METRICS",
    "FairnessRequest",
    "MetricResult",
    "Thresholds",
    "evaluate_fairness",
    "group_rates",
    "parse_fairness_request",
]

FAIRNESS_METRICS = ("spd", "dir")
DEFAULT_BATCH_SIZE = 100
_DEFAULT_DELTA = {"spd": 0.1, "dir": 0.2}
_IDEAL = {"spd": 0.0, "dir": 1.0}

DEFINITIONS = {
    "spd": (
        "Statistical Parity Difference (SPD): the share of the unprivileged group that gets "
        "the favorable outcome minus the share of the privileged group that gets it. Zero is "
        "parity; by default a value within 0 ± 0.1 counts as fair, a negative value means the "
        "unprivileged group gets the favorable outcome less often."
    ),
    "dir": (
        "Disparate Impact Ratio (DIR): the share of the unprivileged group that gets the "
        "favorable outcome divided by the share of the privileged group that gets it. One is "
        "parity; by default a value within 1 ± 0.2 counts as fair (the four-fifths rule), a "
        "value below one means the unprivileged group gets the favorable outcome less often."
    ),
}


@dataclass(frozen=True, slots=True)
class FairnessRequest:
    """A parsed SPD/DIR request, TrustyAI's fields with its value wrappers unwrapped."""

    model_id: str
    protected_attribute: str
    outcome_name: str
    privileged: tuple[Any, ...]
    unprivileged: tuple[Any, ...]
    favorable: tuple[Any, ...]
    batch_size: int
    threshold_delta: float | None
    request_name: str | None
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Thresholds:
    lower_bound: float
    upper_bound: float
    outside_bounds: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "lowerBound": self.lower_bound,
            "upperBound": self.upper_bound,
            "outsideBounds": self.outside_bounds,
        }


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric value, shaped as TrustyAI answers it."""

    name: str
    value: float
    specific_definition: str
    thresholds: Thresholds | None
    named_values: Mapping[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime()),
            "type": "metric",
            "value": self.value,
            "namedValues": dict(self.named_values) if self.named_values is not None else None,
            "specificDefinition": self.specific_definition,
            "name": self.name,
            "id": str(uuid.uuid4()),
            "thresholds": self.thresholds.to_json() if self.thresholds else None,
        }


def _unwrap(value: Any, field: str) -> tuple[Any, ...]:
    """A value as TrustyAI takes it: plain, ``{type, value}``, or its reconcilable forms."""
    if isinstance(value, dict):
        for key in ("reconciledType", "rawValueNodes"):
            if isinstance(value.get(key), list):
                return tuple(_scalar(v, field) for v in value[key])
        if isinstance(value.get("rawValueNode"), dict):
            return (_scalar(value["rawValueNode"], field),)
        return (_scalar(value, field),)
    if isinstance(value, list):
        return tuple(_scalar(v, field) for v in value)
    return (_scalar(value, field),)


def _scalar(value: Any, field: str) -> Any:
    if isinstance(value, dict):
        if "value" not in value:
            raise errors.InvalidInput(f"{field} must be a value or an object with a 'value'.")
        value = value["value"]
    if isinstance(value, (bool, int, float, str)):
        return value
    raise errors.InvalidInput(f"{field} must hold numbers, strings or booleans.")


def _string(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput(f"{field} is required: a non-empty string.")
    return value


def parse_fairness_request(body: Any) -> FairnessRequest:
    """A request from its JSON body; a missing or mistyped field raises, naming the field."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("The metric request must be a JSON object.")
    values: dict[str, tuple[Any, ...]] = {}
    for field in ("privilegedAttribute", "unprivilegedAttribute", "favorableOutcome"):
        if body.get(field) is None:
            raise errors.InvalidInput(f"{field} is required.")
        values[field] = _unwrap(body[field], field)
        if not values[field]:
            raise errors.InvalidInput(f"{field} must hold at least one value.")
    batch_size = body.get("batchSize", DEFAULT_BATCH_SIZE)
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise errors.InvalidInput("batchSize must be a positive integer.")
    delta = body.get("thresholdDelta")
    if delta is not None and (
        not isinstance(delta, (int, float)) or isinstance(delta, bool) or delta < 0
    ):
        raise errors.InvalidInput("thresholdDelta must be a non-negative number.")
    request_name = body.get("requestName")
    if request_name is not None and not isinstance(request_name, str):
        raise errors.InvalidInput("requestName must be a string.")
    overlap = set(values["privilegedAttribute"]) & set(values["unprivilegedAttribute"])
    if overlap:
        raise errors.InvalidInput(
            f"privilegedAttribute and unprivilegedAttribute share {sorted(map(str, overlap))}."
        )
    return FairnessRequest(
        model_id=_string(body, "modelId"),
        protected_attribute=_string(body, "protectedAttribute"),
        outcome_name=_string(body, "outcomeName"),
        privileged=values["privilegedAttribute"],
        unprivileged=values["unprivilegedAttribute"],
        favorable=values["favorableOutcome"],
        batch_size=batch_size,
        threshold_delta=None if delta is None else float(delta),
        request_name=request_name,
        body=body,
    )


def _matches(column: np.ndarray[Any, Any], wanted: Sequence[Any], field: str) -> Any:
    try:
        targets = np.array(wanted, dtype=column.dtype)
    except (TypeError, ValueError):
        raise errors.InvalidInput(
            f"{field} {list(wanted)} does not fit its column's values ({column.dtype})."
        ) from None
    return np.isin(column, targets)


def group_rates(
    protected: np.ndarray[Any, Any],
    outcome: np.ndarray[Any, Any],
    privileged: Sequence[Any],
    unprivileged: Sequence[Any],
    favorable: Sequence[Any],
) -> tuple[float, float]:
    """``(P(fav | privileged), P(fav | unprivileged))``; a missing group raises."""
    if protected.size == 0:
        raise errors.InvalidInput("The slice is empty: there are no rows to compute over.")
    if np.unique(protected).size < 2:
        raise errors.InvalidInput(
            f"The protected attribute has one group only ({protected[0]!r}) in these rows."
        )
    favourable = _matches(outcome, favorable, "favorableOutcome")
    rates = []
    for field, group in (
        ("privilegedAttribute", privileged),
        ("unprivilegedAttribute", unprivileged),
    ):
        members = _matches(protected, group, field)
        count = int(members.sum())
        if count == 0:
            raise errors.InvalidInput(f"No rows belong to the {field} group {list(group)}.")
        rates.append(float(favourable[members].sum()) / count)
    return rates[0], rates[1]


def evaluate_fairness(store: TrustStore, metric: str, request: FairnessRequest) -> MetricResult:
    """SPD or DIR over the model's last ``batchSize`` rows (blocking: reads the store)."""
    columns = store.read(
        request.model_id,
        [request.protected_attribute, request.outcome_name],
        last=request.batch_size,
    )
    privileged, unprivileged = group_rates(
        columns[request.protected_attribute],
        columns[request.outcome_name],
        request.privileged,
        request.unprivileged,
        request.favorable,
    )
    if metric == "spd":
        value = unprivileged - privileged
    elif privileged == 0.0:
        raise errors.InvalidInput(
            "DIR is undefined: no row of the privileged group has the favorable outcome."
        )
    else:
        value = unprivileged / privileged
    delta = _DEFAULT_DELTA[metric] if request.threshold_delta is None else request.threshold_delta
    lower, upper = _IDEAL[metric] - delta, _IDEAL[metric] + delta
    thresholds = Thresholds(lower, upper, not lower <= value <= upper)
    return MetricResult(metric.upper(), value, _specific(metric, value, request), thresholds)


def _specific(metric: str, value: float, request: FairnessRequest) -> str:
    group = f"{request.protected_attribute}={list(request.unprivileged)}"
    other = f"{request.protected_attribute}={list(request.privileged)}"
    outcome = f"{request.outcome_name}={list(request.favorable)}"
    if metric == "spd":
        direction = "less" if value < 0 else "more"
        return (
            f"SPD {value:.4f}: rows with {group} had {outcome} {abs(value) * 100:.2f} "
            f"percentage points {direction} often than rows with {other}."
        )
    return (
        f"DIR {value:.4f}: rows with {group} had {outcome} {value:.4f} times as often as "
        f"rows with {other}."
    )
