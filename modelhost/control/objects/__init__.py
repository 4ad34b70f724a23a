"""Typed API objects: KServe's InferenceService, ServingRuntime and ClusterServingRuntime."""

from __future__ import annotations

from modelhost.control.objects.core import (
    Container,
    ContainerPort,
    EnvVar,
    KubeObject,
    ObjectMeta,
    PodSpec,
    ResourceRequirements,
)
from modelhost.control.objects.inference_service import (
    FRAMEWORKS,
    Addressable,
    ARTExplainerSpec,
    Batcher,
    CanarySpec,
    ComponentSpec,
    ComponentStatusSpec,
    Condition,
    ExplainerSpec,
    InferenceService,
    InferenceServiceSpec,
    InferenceServiceStatus,
    LoggerSpec,
    ModelFormat,
    ModelSpec,
    PredictorExtensionSpec,
    PredictorSpec,
    StorageSpec,
    StorageUri,
    TrafficTarget,
    TransformerSpec,
    WorkerSpec,
)
from modelhost.control.objects.serving_runtime import (
    ClusterServingRuntime,
    ServingRuntime,
    ServingRuntimeSpec,
    SupportedModelFormat,
)

AnyRuntime = ServingRuntime | ClusterServingRuntime
ApiObject = InferenceService | ServingRuntime | ClusterServingRuntime

__all__ = [
    "FRAMEWORKS",
    "ARTExplainerSpec",
    "Addressable",
    "AnyRuntime",
    "ApiObject",
    "Batcher",
    "CanarySpec",
    "ClusterServingRuntime",
    "ComponentSpec",
    "ComponentStatusSpec",
    "Condition",
    "Container",
    "ContainerPort",
    "EnvVar",
    "ExplainerSpec",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "KubeObject",
    "LoggerSpec",
    "ModelFormat",
    "ModelSpec",
    "ObjectMeta",
    "PodSpec",
    "PredictorExtensionSpec",
    "PredictorSpec",
    "ResourceRequirements",
    "ServingRuntime",
    "ServingRuntimeSpec",
    "StorageSpec",
    "StorageUri",
    "SupportedModelFormat",
    "TrafficTarget",
    "TransformerSpec",
    "WorkerSpec",
]
