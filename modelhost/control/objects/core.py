"""Kubernetes' own types that KServe objects embed: metadata, containers, pod specs.

Only the fields modelhost acts on are typed closely; every other field Kubernetes defines is
accepted as ``Any`` (kept, and passed on to the Kubernetes executor) so that valid KServe YAML
is never refused, while a field Kubernetes does not define (a typo) is.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

__all__ = [
    "Container",
    "ContainerPort",
    "EnvVar",
    "KubeObject",
    "ObjectMeta",
    "PodSpec",
    "ResourceRequirements",
]

Quantity = str | int | float


class KubeObject(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """Base of every API type: camelCase field names, unknown fields refused."""


class ObjectMeta(KubeObject):
    """``metadata``: the fields of Kubernetes' ObjectMeta."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    creation_timestamp: datetime.datetime | None = None
    deletion_timestamp: datetime.datetime | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    owner_references: list[Any] | None = None
    managed_fields: list[Any] | None = None
    self_link: str | None = None


class EnvVar(KubeObject):
    name: str
    value: str | None = None
    value_from: Any = None


class ContainerPort(KubeObject):
    container_port: int
    name: str | None = None
    protocol: str | None = None
    host_port: int | None = None
    host_ip: str | None = msgspec.field(default=None, name="hostIP")


class ResourceRequirements(KubeObject):
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None
    claims: list[Any] | None = None


class Container(KubeObject):
    """Kubernetes' Container, inlined in KServe's framework specs and custom components."""

    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] | None = None
    env_from: list[Any] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    resize_policy: list[Any] | None = None
    restart_policy: str | None = None
    restart_policy_rules: list[Any] | None = None
    volume_mounts: list[Any] | None = None
    volume_devices: list[Any] | None = None
    liveness_probe: Any = None
    readiness_probe: Any = None
    startup_probe: Any = None
    lifecycle: Any = None
    termination_message_path: str | None = None
    termination_message_policy: str | None = None
    image_pull_policy: str | None = None
    security_context: Any = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None


class PodSpec(KubeObject):
    """Kubernetes' PodSpec, inlined in every KServe component (``containers`` is optional here)."""

    containers: list[Container] | None = None
    init_containers: list[Container] | None = None
    ephemeral_containers: list[Any] | None = None
    volumes: list[Any] | None = None
    service_account_name: str | None = None
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    node_selector: dict[str, str] | None = None
    node_name: str | None = None
    affinity: Any = None
    tolerations: list[Any] | None = None
    scheduler_name: str | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    preemption_policy: str | None = None
    runtime_class_name: str | None = None
    image_pull_secrets: list[Any] | None = None
    security_context: Any = None
    restart_policy: str | None = None
    termination_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    dns_policy: str | None = None
    dns_config: Any = None
    hostname: str | None = None
    subdomain: str | None = None
    host_aliases: list[Any] | None = None
    host_network: bool | None = None
    host_pid: bool | None = msgspec.field(default=None, name="hostPID")
    host_ipc: bool | None = msgspec.field(default=None, name="hostIPC")
    host_users: bool | None = None
    share_process_namespace: bool | None = None
    readiness_gates: list[Any] | None = None
    enable_service_links: bool | None = None
    overhead: dict[str, Quantity] | None = None
    topology_spread_constraints: list[Any] | None = None
    set_hostname_as_fqdn: bool | None = msgspec.field(default=None, name="setHostnameAsFQDN")
    os: Any = None
    scheduling_gates: list[Any] | None = None
    resource_claims: list[Any] | None = None
    resources: ResourceRequirements | None = None
