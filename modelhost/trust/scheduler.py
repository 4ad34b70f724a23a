"""Scheduled metrics: requests kept in the store, evaluated as data arrives, exported as gauges.

Each metric is one gauge family on the registry the app was given (``trustyai_spd``,
``trustyai_dir``, ``trustyai_meanshift`` …), one series per request, with the labels TrustyAI
puts on it (``model``, ``metricName``, ``request`` and the request's own fields).
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from modelhost import errors
from modelhost.trust.drift import DRIFT_METRICS, evaluate_drift, parse_drift_request
from modelhost.trust.fairness import (
    FAIRNESS_METRICS,
    MetricResult,
    evaluate_fairness,
    parse_fairness_request,
)
from modelhost.trust.store import TrustStore

__all__ = ["ALL_METRICS", "MetricScheduler", "UnknownRequest"]

ALL_METRICS = FAIRNESS_METRICS + DRIFT_METRICS
logger = logging.getLogger("modelhost.trust")

_FAIRNESS_LABELS = (
    "batch_size",
    "favorable_value",
    "metricName",
    "model",
    "outcome",
    "privileged",
    "protected",
    "request",
    "unprivileged",
)
_DRIFT_LABELS = ("batch_size", "metricName", "model", "referenceTag", "request", "subcategory")


class UnknownRequest(errors.ModelhostError):
    """No scheduled request of that metric has this id."""

    status_code = 404
    grpc_status = "NOT_FOUND"


def _joined(values: Iterable[Any]) -> str:
    return ",".join(str(v) for v in values)


class _Scheduled:
    __slots__ = ("body", "metric", "model_id", "parsed", "request_id")

    def __init__(self, request_id: str, metric: str, body: Any) -> None:
        self.request_id = request_id
        self.metric = metric
        self.body = body
        self.parsed: Any = (
            parse_fairness_request(body)
            if metric in FAIRNESS_METRICS
            else parse_drift_request(body)
        )
        self.model_id: str = self.parsed.model_id


class MetricScheduler:
    """Keeps the scheduled requests and their gauges; every method blocks (store I/O)."""

    def __init__(self, store: TrustStore, registry: CollectorRegistry) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._requests: dict[str, _Scheduled] = {}
        self._gauges = {
            metric: Gauge(
                f"trustyai_{metric}",
                f"TrustyAI metric {metric.upper()}, one series per scheduled request",
                _FAIRNESS_LABELS if metric in FAIRNESS_METRICS else _DRIFT_LABELS,
                registry=registry,
            )
            for metric in ALL_METRICS
        }

    def restore(self) -> None:
        """Load the requests the store kept, and evaluate each once."""
        for request_id, _, metric, body in self._store.requests():
            if metric in ALL_METRICS:
                with self._lock:
                    self._requests[request_id] = _Scheduled(request_id, metric, body)
        self.evaluate(None)

    def register(self, metric: str, body: Any) -> str:
        """Validate, keep and evaluate a request; its id. Bad fields raise before it is kept."""
        request_id = str(uuid.uuid4())
        scheduled = _Scheduled(request_id, metric, body)
        # The model must exist now: a request for a typo would export nothing forever.
        schema = self._store.schema(scheduled.model_id)
        for name in _columns_named(scheduled):
            schema.position(name)
        self._store.save_request(request_id, scheduled.model_id, metric, body)
        with self._lock:
            self._requests[request_id] = scheduled
        self._evaluate_one(scheduled)
        return request_id

    def delete(self, metric: str, request_id: Any) -> None:
        if not isinstance(request_id, str) or not request_id:
            raise errors.InvalidInput("requestId is required: a non-empty string.")
        with self._lock:
            scheduled = self._requests.get(request_id)
            if scheduled is None or scheduled.metric != metric:
                raise UnknownRequest(f"No scheduled {metric.upper()} request {request_id!r}.")
            del self._requests[request_id]
        self._store.delete_request(request_id)
        gauge = self._gauges[metric]
        for labels in self._series(scheduled):
            gauge.remove(*labels)

    def listed(self, metric: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"id": s.request_id, "request": {**s.body, "metricName": metric.upper()}}
                for s in self._requests.values()
                if s.metric == metric
            ]

    def watches(self, model_ids: Iterable[str]) -> bool:
        """Whether any scheduled request is on one of these models."""
        wanted = set(model_ids)
        with self._lock:
            return any(s.model_id in wanted for s in self._requests.values())

    def evaluate(self, model_ids: Iterable[str] | None) -> None:
        """Re-evaluate the requests of these models (all when None) and set their gauges."""
        wanted = None if model_ids is None else set(model_ids)
        with self._lock:
            due = [s for s in self._requests.values() if wanted is None or s.model_id in wanted]
        for scheduled in due:
            self._evaluate_one(scheduled)

    def _evaluate_one(self, scheduled: _Scheduled) -> None:
        try:
            if scheduled.metric in FAIRNESS_METRICS:
                result = evaluate_fairness(self._store, scheduled.metric, scheduled.parsed)
            else:
                result = evaluate_drift(self._store, scheduled.metric, scheduled.parsed)
        except errors.ModelhostError as exc:
            # Not enough data yet (one group, no reference rows): the series waits for more.
            logger.debug("trust: request %s not evaluated: %s", scheduled.request_id, exc)
            return
        self._publish(scheduled, result)

    def _publish(self, scheduled: _Scheduled, result: MetricResult) -> None:
        gauge = self._gauges[scheduled.metric]
        if scheduled.metric in FAIRNESS_METRICS:
            gauge.labels(*self._fairness_labels(scheduled)).set(result.value)
            return
        for column, value in (result.named_values or {}).items():
            gauge.labels(*self._drift_labels(scheduled, column)).set(
                value if math.isfinite(value) else math.nan
            )

    def _series(self, scheduled: _Scheduled) -> list[tuple[str, ...]]:
        if scheduled.metric in FAIRNESS_METRICS:
            return [self._fairness_labels(scheduled)]
        gauge = self._gauges[scheduled.metric]
        return [
            labels
            for metric in gauge.collect()
            for labels in {
                tuple(sample.labels[name] for name in _DRIFT_LABELS) for sample in metric.samples
            }
            if labels[_DRIFT_LABELS.index("request")] == scheduled.request_id
        ]

    @staticmethod
    def _fairness_labels(scheduled: _Scheduled) -> tuple[str, ...]:
        p = scheduled.parsed
        return (
            str(p.batch_size),
            _joined(p.favorable),
            scheduled.metric.upper(),
            p.model_id,
            p.outcome_name,
            _joined(p.privileged),
            p.protected_attribute,
            scheduled.request_id,
            _joined(p.unprivileged),
        )

    @staticmethod
    def _drift_labels(scheduled: _Scheduled, column: str) -> tuple[str, ...]:
        p = scheduled.parsed
        return (
            str(p.batch_size),
            scheduled.metric.upper(),
            p.model_id,
            p.reference_tag,
            scheduled.request_id,
            column,
        )


def _columns_named(scheduled: _Scheduled) -> tuple[str, ...]:
    p = scheduled.parsed
    if scheduled.metric in FAIRNESS_METRICS:
        return (p.protected_attribute, p.outcome_name)
    return tuple(p.fit_columns)
