"""How a revision's model reaches ``/mnt/models``: KServe's three ways, from the storage URI.

- a ``pvc://claim/path`` is mounted read-only at ``/mnt/models`` (no copy);
- an ``oci://`` model image runs as KServe's *modelcar*: a sidecar sharing the pod's process
  namespace links its ``/models`` folder to ``/mnt/models``, after an init container of the
  same image has checked (and so pulled) it;
- anything else is fetched by the storage initializer, an init container running
  ``modelhost fetch URI /mnt/models`` into an emptyDir the server reads.

A model located by KServe's storage spec (``storage: {key, path, parameters}``) is fetched
by the same initializer, given KServe's variables: ``STORAGE_CONFIG``, the storage Secret's
entry (a ``secretKeyRef``, so the Secret is read by the kubelet, never by the renderer), and
``STORAGE_OVERRIDE_CONFIG``, the parameters as JSON; ``modelhost fetch --storage-path PATH``
builds the URI from them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from modelhost.control.plan_types import StorageSpecPlan
from modelhost.kube.manifests.metadata import MODEL_DIR
from modelhost.kube.manifests.security import container_security
from modelhost.kube.settings import KubeSettings
from modelhost.storage.storage_config import STORAGE_CONFIG_ENV, STORAGE_OVERRIDE_CONFIG_ENV

__all__ = [
    "INITIALIZER_CONTAINER",
    "MODELCAR_CONTAINER",
    "MODELCAR_INIT_CONTAINER",
    "MODEL_VOLUME",
    "PVC_VOLUME",
    "ModelSource",
    "model_source",
]

# KServe's names, so that tooling written for KServe's pods finds the same containers.
INITIALIZER_CONTAINER = "storage-initializer"
MODEL_VOLUME = "kserve-provision-location"
PVC_VOLUME = "kserve-pvc-source"
MODELCAR_CONTAINER = "modelcar"
MODELCAR_INIT_CONTAINER = "modelcar-init"
_MODEL_PARENT = MODEL_DIR.rsplit("/", 1)[0]
# KServe's storage-initializer and modelcar defaults.
_INITIALIZER_RESOURCES = {
    "limits": {"cpu": "1", "memory": "1Gi"},
    "requests": {"cpu": "100m", "memory": "100Mi"},
}
_MODELCAR_RESOURCES = {
    "limits": {"cpu": "10m", "memory": "15Mi"},
    "requests": {"cpu": "10m", "memory": "15Mi"},
}
# Kubernetes turns ``$$`` into ``$`` in args, so the shell sees ``$$`` (its PID) and ``$(``.
_LINK_MODELS = f"ln -sf /proc/$$$$/root/models {MODEL_DIR} && sleep infinity"
_CHECK_MODELS = (
    '[ -d /models ] && [ -n "$$(ls -A /models)" ] '
    "|| { echo 'the model image has no files in /models' >&2; exit 1; }"
)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What a pod needs beside the server container to find its model."""

    init_containers: tuple[dict[str, Any], ...] = ()
    sidecars: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    server_mounts: tuple[dict[str, Any], ...] = ()
    server_env: tuple[tuple[str, str], ...] = ()
    share_process_namespace: bool = False


def model_source(
    storage_uri: str | None, settings: KubeSettings, storage: StorageSpecPlan | None = None
) -> ModelSource:
    """The containers, volumes and mounts that put the model at ``/mnt/models``.

    ``storage`` is the storage spec: with a path it is the model's location, without one it
    brings the credentials for a fetched ``storage_uri``.
    """
    if storage is not None and storage.path is not None:
        return _initializer(["--storage-path", storage.path], settings, storage)
    if not storage_uri:
        return ModelSource()
    if storage_uri.startswith("pvc://"):
        return _pvc(storage_uri)
    if storage_uri.startswith("oci://"):
        return _modelcar(storage_uri[len("oci://") :], settings)
    return _initializer([storage_uri], settings, storage)


def _pvc(uri: str) -> ModelSource:
    claim, _, path = uri[len("pvc://") :].partition("/")
    mount: dict[str, Any] = {"name": PVC_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}
    if path.strip("/"):
        mount["subPath"] = path.strip("/")
    volume = {
        "name": PVC_VOLUME,
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    return ModelSource(volumes=(volume,), server_mounts=(mount,))


def _initializer(
    source: list[str], settings: KubeSettings, storage: StorageSpecPlan | None
) -> ModelSource:
    container: dict[str, Any] = {
        "name": INITIALIZER_CONTAINER,
        "image": settings.initializer_image,
        **_pull_policy(settings),
        "command": ["modelhost"],
        "args": ["fetch", *source, MODEL_DIR],
    }
    if storage is not None:
        container["env"] = _storage_env(storage)
    container |= {
        "resources": _INITIALIZER_RESOURCES,
        "securityContext": container_security(),
        # The operator reports a failed fetch with the container's last words.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}],
    }
    return ModelSource(
        init_containers=(container,),
        volumes=({"name": MODEL_VOLUME, "emptyDir": {}},),
        server_mounts=({"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True},),
    )


def _storage_env(storage: StorageSpecPlan) -> list[dict[str, Any]]:
    """KServe's variables: the Secret's entry by reference, and the parameters over it."""
    reference: dict[str, Any] = {"name": storage.secret, "key": storage.key}
    if storage.key_optional:
        # KServe's fallback key may be missing: the parameters then say it all.
        reference["optional"] = True
    env: list[dict[str, Any]] = [
        {"name": STORAGE_CONFIG_ENV, "valueFrom": {"secretKeyRef": reference}}
    ]
    if storage.parameters:
        # Compact, keys sorted: the JSON KServe's webhook writes for the same parameters.
        overrides = json.dumps(dict(storage.parameters), sort_keys=True, separators=(",", ":"))
        env.append({"name": STORAGE_OVERRIDE_CONFIG_ENV, "value": overrides})
    return env


def _modelcar(image: str, settings: KubeSettings) -> ModelSource:
    common = {
        "image": settings.image(image),
        **_pull_policy(settings),
        "resources": _MODELCAR_RESOURCES,
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    check = {"name": MODELCAR_INIT_CONTAINER, **common, "args": ["sh", "-c", _CHECK_MODELS]}
    sidecar = {
        "name": MODELCAR_CONTAINER,
        **common,
        "args": ["sh", "-c", _LINK_MODELS],
        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": _MODEL_PARENT}],
    }
    return ModelSource(
        init_containers=(check,),
        sidecars=(sidecar,),
        volumes=({"name": MODEL_VOLUME, "emptyDir": {}},),
        server_mounts=({"name": MODEL_VOLUME, "mountPath": _MODEL_PARENT},),
        # KServe's signal that /mnt/models appears once the sidecar has linked it.
        server_env=(("MODEL_INIT_MODE", "async"),),
        share_process_namespace=True,
    )


def _pull_policy(settings: KubeSettings) -> dict[str, str]:
    return {"imagePullPolicy": settings.image_pull_policy} if settings.image_pull_policy else {}
