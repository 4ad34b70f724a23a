"""KServe's ``serving.kserve.io/v1alpha1`` ServingRuntime and ClusterServingRuntime.

Both kinds share one spec: the model formats a runtime serves (with ``autoSelect`` and
``priority`` for auto-selection), the protocols it speaks, and the pod that runs it (its
``kserve-container`` is what a predictor's ``model:`` fields are merged onto).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from modelhost.control.objects.core import Container, KubeObject, ObjectMeta

__all__ = [
    "BuiltInAdapter",
    "ClusterServingRuntime",
    "ServingRuntime",
    "ServingRuntimeSpec",
    "SupportedModelFormat",
]


class SupportedModelFormat(KubeObject):
    name: str | None = None
    version: str | None = None
    auto_select: bool | None = None
    priority: int | None = None


class BuiltInAdapter(KubeObject):
    server_type: str | None = None
    runtime_management_port: int | None = None
    mem_buffer_bytes: int | None = None
    model_loading_timeout_millis: int | None = None
    env: list[Any] | None = None


class ServingRuntimePodSpec(KubeObject):
    containers: list[Container] | None = None
    volumes: list[Any] | None = None
    node_selector: dict[str, str] | None = None
    affinity: Any = None
    tolerations: list[Any] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    image_pull_secrets: list[Any] | None = None
    host_ipc: bool | None = msgspec.field(default=None, name="hostIPC")
    scheduler_name: str | None = None
    resource_claims: list[Any] | None = None
    security_context: Any = None
    service_account_name: str | None = None


class RuntimeWorkerSpec(ServingRuntimePodSpec):
    pipeline_parallel_size: int | None = None
    tensor_parallel_size: int | None = None


class ServingRuntimeSpec(ServingRuntimePodSpec):
    supported_model_formats: list[SupportedModelFormat] | None = None
    protocol_versions: list[str] | None = None
    multi_model: bool | None = None
    disabled: bool | None = None
    worker_spec: RuntimeWorkerSpec | None = None
    grpc_endpoint: str | None = None
    grpc_data_endpoint: str | None = None
    http_data_endpoint: str | None = None
    replicas: int | None = None
    storage_helper: dict[str, Any] | None = None
    built_in_adapter: BuiltInAdapter | None = None

    def priority_of(self, format_name: str) -> int | None:
        """KServe's ``GetPriority``: the priority of the first entry with that format name."""
        for entry in self.supported_model_formats or ():
            if entry.name == format_name:
                return entry.priority
        return None


class _Runtime(KubeObject):
    API_VERSION: ClassVar[str] = "serving.kserve.io/v1alpha1"

    api_version: str = API_VERSION
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: ServingRuntimeSpec = msgspec.field(default_factory=ServingRuntimeSpec)
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def disabled(self) -> bool:
        return bool(self.spec.disabled)


class ServingRuntime(_Runtime):
    """A runtime in one namespace; it serves only InferenceServices of that namespace."""

    KIND: ClassVar[str] = "ServingRuntime"
    kind: str = KIND

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


class ClusterServingRuntime(_Runtime):
    """A runtime for every namespace; namespaced ServingRuntimes are preferred over it."""

    KIND: ClassVar[str] = "ClusterServingRuntime"
    kind: str = KIND
