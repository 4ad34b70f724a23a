"""What the operator's two reconcilers (InferenceServices, InferenceGraphs) share.

:class:`ReconcileQueue` runs one reconcile at a time per object and turns the kicks that
wait for one into one, retrying API errors with back-off; :func:`carry_out` makes a
decision true in the cluster (server-side apply of what changed, deletes guarded by uid);
:func:`api_object` copies what kopf hands a handler into the plain dicts the parser takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from modelhost.kube.client import KubeApiError, KubeClient, resource_for
from modelhost.kube.operator_settings import OperatorSettings
from modelhost.kube.reconcile import ObjectRef, Scale, needs_apply

__all__ = ["ObjectKey", "ReconcileQueue", "api_object", "carry_out"]

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


def api_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of an API object, as the parser takes it."""
    return {key: _plain(value) for key, value in body.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [_plain(item) for item in value]
    return value
