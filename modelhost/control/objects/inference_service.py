"""KServe's ``serving.kserve.io/v1beta1`` InferenceService, field for field.

Field names and nesting follow KServe's Go types (``pkg/apis/serving/v1beta1``): a component
is a PodSpec with KServe's ComponentExtensionSpec inlined; a predictor adds the framework
shorthands (``sklearn:``, ...), ``model:`` and ``workerSpec``. The status types are written by
the executors and are lenient (they may come from a real cluster's ``kubectl get -o yaml``).
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar, Literal

import msgspec

from modelhost.control.objects.core import Container, KubeObject, ObjectMeta, PodSpec, Quantity

__all__ = [
    "FRAMEWORKS",
    "ARTExplainerSpec",
    "Addressable",
    "AuthenticationRef",
    "AutoScalingBehavior",
    "AutoScalingSpec",
    "Batcher",
    "CanarySpec",
    "ComponentSpec",
    "ComponentStatusSpec",
    "Condition",
    "ExplainerSpec",
    "ExternalMetricAuthentication",
    "ExternalMetricSource",
    "ExternalMetrics",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "LoggerSpec",
    "MetricTarget",
    "MetricsSpec",
    "ModelFormat",
    "ModelSpec",
    "PodMetricSource",
    "PodMetrics",
    "PredictorExtensionSpec",
    "PredictorSpec",
    "ResourceMetricSource",
    "ScalingRules",
    "StorageSpec",
    "StorageUri",
    "TrafficTarget",
    "TransformerSpec",
    "WorkerSpec",
]

# The framework shorthands of PredictorSpec, in KServe's order.
FRAMEWORKS: tuple[str, ...] = (
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
)


class StorageSpec(KubeObject):
    path: str | None = None
    schema_path: str | None = None
    parameters: dict[str, str] | None = None
    key: str | None = None
    storage_key: str | None = None


class StorageUri(KubeObject):
    uri: str
    mount_path: str | None = None


class PredictorExtensionSpec(Container):
    """What every framework shorthand and ``model:`` share: the model's location and protocol."""

    storage_uri: str | None = None
    runtime_version: str | None = None
    protocol_version: str | None = None
    storage: StorageSpec | None = None
    confidential: Any = None


class ModelFormat(KubeObject):
    name: str | None = None
    version: str | None = None


class ModelSpec(PredictorExtensionSpec):
    """``predictor.model``: a model format, and optionally the runtime that must serve it."""

    model_format: ModelFormat | None = None
    runtime: str | None = None


class LoggerSpec(KubeObject):
    url: str | None = None
    mode: str | None = None
    metadata_headers: list[str] | None = None
    metadata_annotations: list[str] | None = None
    storage: Any = None
    marshaller_url: str | None = None
    batch_size: int | None = None
    batch_interval: str | None = None


class Batcher(KubeObject):
    max_batch_size: int | None = None
    max_latency: int | None = None
    timeout: int | None = None


class MetricTarget(KubeObject):
    """Kubernetes' MetricTarget: Utilization (percent of the requests), AverageValue or Value."""

    type: str | None = None
    value: Quantity | None = None
    average_value: Quantity | None = None
    average_utilization: int | None = None


class ResourceMetricSource(KubeObject):
    """The pods' cpu or memory, as the HPA (or KEDA's cpu and memory scalers) measure it."""

    name: str | None = None
    target: MetricTarget | None = None


class ExternalMetrics(KubeObject):
    """A query against a metrics backend (KServe allows prometheus and graphite)."""

    backend: str | None = None
    server_address: str | None = None
    query: str | None = None
    namespace: str | None = None


class AuthenticationRef(KubeObject):
    name: str


class ExternalMetricAuthentication(KubeObject):
    """How KEDA authenticates to the backend: a TriggerAuthentication, and its modes."""

    auth_modes: str | None = None
    authentication_ref: AuthenticationRef | None = None


class ExternalMetricSource(KubeObject):
    metric: ExternalMetrics | None = None
    target: MetricTarget | None = None
    authentication_ref: ExternalMetricAuthentication | None = None


class PodMetrics(KubeObject):
    backend: str | None = None
    server_address: str | None = None
    query: str | None = None
    metric_names: list[str] | None = None
    operation_over_time: str | None = None


class PodMetricSource(KubeObject):
    metric: PodMetrics | None = None
    target: MetricTarget | None = None


class MetricsSpec(KubeObject):
    """One entry of ``autoScaling.metrics``: ``type`` says which of the sources is set."""

    type: str | None = None
    resource: ResourceMetricSource | None = None
    external: ExternalMetricSource | None = None
    # KServe's JSON name is all lower case.
    podmetric: PodMetricSource | None = msgspec.field(default=None, name="podmetric")


class ScalingRules(KubeObject):
    """The HPA's HPAScalingRules for one direction."""

    stabilization_window_seconds: int | None = None
    select_policy: str | None = None
    policies: list[Any] | None = None
    tolerance: Quantity | None = None


class AutoScalingBehavior(KubeObject):
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


class AutoScalingSpec(KubeObject):
    """``autoScaling``: the metrics (and behavior) of the hpa and keda autoscaler classes."""

    metrics: list[MetricsSpec] | None = None
    behavior: AutoScalingBehavior | None = None


class ComponentSpec(PodSpec):
    """A component: its pod, plus KServe's ComponentExtensionSpec (scaling, rollout, agent)."""

    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_target: int | None = None
    scale_metric: str | None = None
    scale_metric_type: str | None = None
    auto_scaling: AutoScalingSpec | None = None
    container_concurrency: int | None = None
    timeout: int | None = None
    canary_traffic_percent: int | None = None
    logger: LoggerSpec | None = None
    batcher: Batcher | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deployment_strategy: Any = None


class WorkerSpec(PodSpec):
    pipeline_parallel_size: int | None = None
    tensor_parallel_size: int | None = None


class PredictorSpec(ComponentSpec):
    """``spec.predictor``: exactly one of a shorthand, ``model`` or custom ``containers``."""

    name: str | None = None
    sklearn: PredictorExtensionSpec | None = None
    xgboost: PredictorExtensionSpec | None = None
    tensorflow: PredictorExtensionSpec | None = None
    pytorch: PredictorExtensionSpec | None = None
    triton: PredictorExtensionSpec | None = None
    onnx: PredictorExtensionSpec | None = None
    huggingface: PredictorExtensionSpec | None = None
    pmml: PredictorExtensionSpec | None = None
    lightgbm: PredictorExtensionSpec | None = None
    paddle: PredictorExtensionSpec | None = None
    model: ModelSpec | None = None
    storage_uris: list[StorageUri] | None = None
    storage_container_name: str | None = None
    worker_spec: WorkerSpec | None = None

    def framework(self, name: str) -> PredictorExtensionSpec | None:
        value: PredictorExtensionSpec | None = getattr(self, name)
        return value


class TransformerSpec(ComponentSpec):
    storage_uris: list[StorageUri] | None = None


class ARTExplainerSpec(Container):
    type: str | None = None
    storage_uri: str | None = None
    runtime_version: str | None = None
    config: dict[str, str] | None = None


class ExplainerSpec(ComponentSpec):
    art: ARTExplainerSpec | None = None
    storage_uris: list[StorageUri] | None = None


class CanarySpec(KubeObject):
    """One entry of ``spec.canary`` (KServe v0.20, Standard mode)."""

    predictor: PredictorSpec | None = None
    traffic_percent: int | None = None


class InferenceServiceSpec(KubeObject):
    predictor: PredictorSpec | None = None
    transformer: TransformerSpec | None = None
    explainer: ExplainerSpec | None = None
    canary: list[CanarySpec] | None = None


class StatusObject(
    msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=False
):
    """Base of the status types: unknown fields are dropped, as status is not user input."""


class Condition(StatusObject):
    type: str
    status: Literal["True", "False", "Unknown"] = "Unknown"
    severity: str | None = None
    last_transition_time: datetime.datetime | None = None
    reason: str | None = None
    message: str | None = None


class TrafficTarget(StatusObject):
    """Knative's TrafficTarget, as KServe copies it into ``status.components.<c>.traffic``."""

    revision_name: str | None = None
    configuration_name: str | None = None
    latest_revision: bool | None = None
    percent: int | None = None
    tag: str | None = None
    url: str | None = None


class Addressable(StatusObject):
    url: str | None = None


class ComponentStatusSpec(StatusObject):
    latest_ready_revision: str | None = None
    latest_created_revision: str | None = None
    previous_rolledout_revision: str | None = None
    latest_rolledout_revision: str | None = None
    traffic: list[TrafficTarget] | None = None
    url: str | None = None
    rest_url: str | None = None
    grpc_url: str | None = None
    address: Addressable | None = None


class InferenceServiceStatus(StatusObject):
    observed_generation: int | None = None
    conditions: list[Condition] | None = None
    annotations: dict[str, str] | None = None
    url: str | None = None
    address: Addressable | None = None
    components: dict[str, ComponentStatusSpec] | None = None
    model_status: dict[str, Any] | None = None
    canary_statuses: list[dict[str, Any]] | None = None
    deployment_mode: str | None = None
    serving_runtime_name: str | None = None
    cluster_serving_runtime_name: str | None = None


class InferenceService(KubeObject):
    API_VERSION: ClassVar[str] = "serving.kserve.io/v1beta1"
    KIND: ClassVar[str] = "InferenceService"

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: InferenceServiceSpec = msgspec.field(default_factory=InferenceServiceSpec)
    status: InferenceServiceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations or {}
