"""What the operator's two reconcilers (InferenceServices, InferenceGraphs) share.

:class:`ReconcileQueue` runs one reconcile at a time per object and turns the kicks that
wait for one into one, retrying API errors with back-off; :func:`carry_out` makes a
decision true in the cluster (server-side apply of what changed, deletes guarded by uid);
:func:`list_owned`, :func:`write_status` and :func:`report_refusal` read what an object
owns and write its status; :func:`api_object` copies what kopf hands a handler into the
plain dicts the parser takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import kopf

from modelhost.control.conditions import Check, conditions
from modelhost.control.objects import Condition, InferenceGraphStatus, InferenceServiceStatus
from modelhost.kube.client import KubeApiError, KubeClient, Resource, resource_for
from modelhost.kube.operator_settings import OperatorSettings
from modelhost.kube.reconcile import ObjectRef, Scale, needs_apply
from modelhost.kube.status import status_patch

__all__ = [
    "ObjectKey",
    "ReconcileQueue",
    "api_object",
    "carry_out",
    "list_owned",
    "report_refusal",
    "retry_later",
    "write_status",
]

# The status of an object the operator reconciles.
AnyStatus = TypeVar("AnyStatus", InferenceServiceStatus, InferenceGraphStatus)

logger = logging.getLogger("modelhost.kube")

# Which object a reconcile is for: (kind, namespace, name).
ObjectKey = tuple[str, str, str]


class ReconcileQueue:
    """Per-object locks, and kicks with retries (``OperatorSettings``' back-off and attempts)."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._locks: dict[ObjectKey, asyncio.Lock] = {}
        self._queued: set[ObjectKey] = set()

    def lock(self, key: ObjectKey) -> asyncio.Lock:
        """The lock every reconcile of ``key`` holds."""
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: ObjectKey) -> None:
        """Drop the lock of an object that is gone, unless a reconcile still holds it."""
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    def backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (from 0): doubling, up to the maximum."""
        settings = self.settings
        return float(min(settings.retry_backoff_s * 2**attempt, settings.retry_backoff_max_s))

    async def kick(self, key: ObjectKey, reconcile: Callable[[], Awaitable[object]]) -> None:
        """Run ``reconcile`` soon under ``key``'s lock; kicks while one waits make one.

        API errors are retried with back-off here (an event handler has no kopf retries),
        up to ``kick_attempts`` times; then logged, for the next event to take it up.
        """
        if key in self._queued:
            return
        self._queued.add(key)
        try:
            for attempt in range(self.settings.kick_attempts):
                try:
                    async with self.lock(key):
                        self._queued.discard(key)
                        await reconcile()
                    return
                except KubeApiError as exc:
                    last = attempt + 1 >= self.settings.kick_attempts
                    if not exc.retryable or last:
                        kind, namespace, name = key
                        logger.warning(
                            "reconcile of %s %s/%s failed: %s", kind, namespace, name, exc
                        )
                        return
                    self._queued.add(key)  # later kicks wait for this retry
                    await asyncio.sleep(self.backoff(attempt))
        finally:
            self._queued.discard(key)


async def carry_out(
    client: KubeClient,
    owned: Iterable[Mapping[str, Any]],
    apply: Iterable[Mapping[str, Any]],
    delete: Iterable[ObjectRef],
    scale: Iterable[Scale] = (),
) -> None:
    """Apply the manifests that would change what is live, scale, then delete ``delete``.

    A delete names the uid it saw (``owned``), so an object made again since is kept.
    """
    live = {ObjectRef.of(obj): obj for obj in owned}
    for manifest in apply:
        if needs_apply(live.get(ObjectRef.of(manifest)), manifest):
            await client.apply(manifest)
    for change in scale:
        target = change.target
        await client.merge_patch(
            resource_for(target.api_version, target.kind),
            target.namespace,
            target.name,
            {"spec": {"replicas": change.replicas}},
        )
    for ref in delete:
        uid = (live[ref].get("metadata") or {}).get("uid") if ref in live else None
        await client.delete(
            resource_for(ref.api_version, ref.kind), ref.namespace, ref.name, uid=uid
        )


async def retry_later(
    queue: ReconcileQueue,
    retry: int,
    error: KubeApiError,
    report: Callable[[KubeApiError], Awaitable[None]],
) -> kopf.TemporaryError:
    """kopf's retry of a handler that failed on the API, after back-off (reported when slow)."""
    delay = queue.backoff(retry)
    if not error.retryable:
        # A refusal that another try will not change soon (RBAC, a webhook, a missing
        # CRD): retry slowly, and say so where users look.
        delay = queue.settings.retry_backoff_max_s
        await report(error)
    return kopf.TemporaryError(f"{error} (retrying in {delay:g}s)", delay=delay)


async def list_owned(
    client: KubeClient, resources: Iterable[Resource], namespace: str, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Every object of ``resources`` in ``namespace`` with ``labels``."""
    found = await asyncio.gather(*(client.list(r, namespace, labels) for r in resources))
    return [obj for objects in found for obj in objects]


async def write_status(
    client: KubeClient,
    resource: Resource,
    namespace: str,
    name: str,
    live: Mapping[str, Any] | None,
    status: InferenceServiceStatus | InferenceGraphStatus,
) -> None:
    """Patch the status subresource with what changed from ``live`` (nothing: no call)."""
    patch = status_patch(live, status)
    if patch is not None:
        await client.merge_patch(resource, namespace, name, {"status": patch}, subresource="status")


async def report_refusal(
    client: KubeClient,
    resource: Resource,
    namespace: str,
    name: str,
    error: KubeApiError,
    parse: Callable[[Any], AnyStatus | None],
    empty: Callable[[], AnyStatus],
) -> None:
    """Ready=False with the API server's refusal, when it can be written at all."""
    try:
        body = await client.get(resource, namespace, name)
        if body is None:
            return
        status = parse(body.get("status")) or empty()
        reason = f"Api{error.kube_reason.replace(' ', '')}"
        kept: list[Condition] = [c for c in status.conditions or () if c.type != "Ready"]
        ready: list[Condition] = conditions(
            [Check("Ready", False, reason, str(error))],
            [c for c in status.conditions or () if c.type == "Ready"],
        )
        status.conditions = sorted([*kept, *ready], key=lambda c: c.type)
        await write_status(client, resource, namespace, name, body.get("status"), status)
    except KubeApiError as exc:
        logger.warning("could not report the failure on %s/%s: %s", namespace, name, exc)


def api_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of an API object, as the parser takes it."""
    return {key: _plain(value) for key, value in body.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [_plain(item) for item in value]
    return value
