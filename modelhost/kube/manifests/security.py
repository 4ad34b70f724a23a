"""The restricted Pod Security Standard, as every rendered pod and container wears it."""

from __future__ import annotations

from typing import Any

from modelhost.kube.settings import KubeSettings

__all__ = ["container_security", "pod_security"]


def pod_security(settings: KubeSettings) -> dict[str, Any]:
    """Non-root with the runtime's default seccomp profile.

    A fixed user (the modelhost images' uid 1000 by default) lets images that leave USER as
    root (a modelcar built ``FROM busybox``) start under ``runAsNonRoot``, and lets the
    server read the modelcar's files through ``/proc`` as the same user.
    """
    security: dict[str, Any] = {"runAsNonRoot": True}
    if settings.run_as_user is not None:
        security["runAsUser"] = settings.run_as_user
        security["runAsGroup"] = settings.run_as_user
    security["seccompProfile"] = {"type": "RuntimeDefault"}
    return security


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
