"""The names KServe gives meaning to: annotations, container names, modes and protocols."""

from __future__ import annotations

__all__ = [
    "AUTOSCALER_CLASSES",
    "AUTOSCALER_CLASS_ANNOTATION",
    "DEPLOYMENT_MODES",
    "DEPLOYMENT_MODE_ANNOTATION",
    "ENABLE_TAG_ROUTING_ANNOTATION",
    "INITIAL_SCALE_ANNOTATION",
    "KNATIVE_AUTOSCALER_CLASS_ANNOTATION",
    "KNATIVE_HPA_CLASS",
    "KSERVE_CONTAINER",
    "LEGACY_DEPLOYMENT_MODES",
    "MODEL_FORMAT_ANNOTATION",
    "PROTOCOLS",
    "SERVER_TYPE_ANNOTATION",
    "STOP_ANNOTATION",
    "TRANSFORMER_CONTAINER",
    "normalize_mode",
    "protocol_rank",
]

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
KNATIVE_AUTOSCALER_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"
MODEL_FORMAT_ANNOTATION = "modelFormat"
STOP_ANNOTATION = "serving.kserve.io/stop"
ENABLE_TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
INITIAL_SCALE_ANNOTATION = "autoscaling.knative.dev/initial-scale"
SERVER_TYPE_ANNOTATION = "serving.kserve.io/server-type"

# The predictor's container in a runtime or a custom pod, and a collocated transformer's.
KSERVE_CONTAINER = "kserve-container"
TRANSFORMER_CONTAINER = "transformer-container"

DEPLOYMENT_MODES = ("Standard", "Knative", "ModelMesh")
# The names before KServe PR #4608; accepted everywhere and rewritten to the new ones.
LEGACY_DEPLOYMENT_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}

# ``kpa`` exists in KServe as a constant but its webhook refuses it.
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")

# In KServe's order of preference: a runtime's lowest protocol is its default.
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")


def normalize_mode(mode: str) -> str:
    """``RawDeployment`` → ``Standard``, ``Serverless`` → ``Knative``; others unchanged."""
    return LEGACY_DEPLOYMENT_MODES.get(mode, mode)


def protocol_rank(protocol: str) -> int:
    """v1=1, v2=2, grpc-v1=3, grpc-v2=4, anything else 5 (KServe's protocol ordering)."""
    return PROTOCOLS.index(protocol) + 1 if protocol in PROTOCOLS else len(PROTOCOLS) + 1
