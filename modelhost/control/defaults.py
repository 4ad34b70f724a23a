"""KServe's mutating webhook for InferenceServices: the defaults written into the spec.

The steps run in KServe's order (``inference_service_defaults.go``): the deployment-mode
annotation, the framework shorthand → ``model`` conversion with its protocol defaults, the
``modelFormat`` annotation, then each custom component's container name and resources. What
KServe decides only at reconcile time (the runtime, the runtime's protocol, ``minReplicas`` 1,
the scale metric) is not written here: the planner applies it, so ``get -o yaml`` shows the
same spec KServe would store.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelhost.control.config import PlatformConfig
from modelhost.control.names import (
    DEPLOYMENT_MODE_ANNOTATION,
    KSERVE_CONTAINER,
    MODEL_FORMAT_ANNOTATION,
    TRANSFORMER_CONTAINER,
    normalize_mode,
)
from modelhost.control.objects import (
    FRAMEWORKS,
    ComponentSpec,
    Container,
    InferenceService,
    ModelFormat,
    ModelSpec,
    PredictorSpec,
    ResourceRequirements,
)

__all__ = [
    "V2_DEFAULT_FORMATS",
    "V2_DEFAULT_FRAMEWORKS",
    "apply_defaults",
    "clone",
    "custom_containers",
    "deployment_mode",
]

# Shorthands whose protocol defaults to v2 during conversion, and model formats that do too.
V2_DEFAULT_FRAMEWORKS = ("triton", "onnx", "huggingface")
V2_DEFAULT_FORMATS = ("triton", "vLLM")
_RESOURCE_NAMES = ("cpu", "memory")


def clone(obj: Any) -> Any:
    """A deep copy of an API object (defaulting never changes its input)."""
    return msgspec.convert(msgspec.to_builtins(obj), type(obj))


def deployment_mode(isvc: InferenceService, config: PlatformConfig) -> str:
    """KServe's resolution: the recorded status first, then the annotation, then the default."""
    if isvc.status is not None and isvc.status.deployment_mode:
        return normalize_mode(isvc.status.deployment_mode)
    annotated = isvc.annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    return normalize_mode(annotated or config.default_deployment_mode)


def apply_defaults(
    isvc: InferenceService, config: PlatformConfig | None = None
) -> InferenceService:
    """A defaulted copy of ``isvc``, as KServe's webhook would store it."""
    config = config or PlatformConfig()
    result: InferenceService = clone(isvc)
    if result.metadata.namespace is None:
        result.metadata.namespace = "default"
    annotations = dict(result.metadata.annotations or {})
    _default_deployment_mode(annotations, config)
    mode = normalize_mode(annotations.get(DEPLOYMENT_MODE_ANNOTATION, ""))
    predictor = result.spec.predictor
    if predictor is not None and mode != "ModelMesh":
        _convert_shorthand(predictor)
    if predictor is not None and predictor.model is not None:
        model = predictor.model
        format_name = model.model_format.name if model.model_format else None
        if model.protocol_version is None and format_name in V2_DEFAULT_FORMATS:
            model.protocol_version = "v2"
        if format_name:
            annotations.setdefault(MODEL_FORMAT_ANNOTATION, format_name)
    for component in (predictor, result.spec.transformer, result.spec.explainer):
        if component is not None:
            _default_custom_containers(component, config)
    if result.spec.explainer is not None and result.spec.explainer.art is not None:
        _default_resources(result.spec.explainer.art, config)
    result.metadata.annotations = annotations or None
    return result


def custom_containers(component: ComponentSpec) -> list[Container]:
    """The custom containers of a component (a predictor's collocated transformer excluded).

    KServe counts a predictor's ``containers`` as a custom predictor only when the first one is
    not the collocated ``transformer-container``.
    """
    containers = component.containers or []
    if containers and containers[0].name == TRANSFORMER_CONTAINER:
        return []
    return containers


def _default_deployment_mode(annotations: dict[str, str], config: PlatformConfig) -> None:
    current = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if current is not None:
        annotations[DEPLOYMENT_MODE_ANNOTATION] = normalize_mode(current)
        return
    default = normalize_mode(config.default_deployment_mode)
    # KServe writes a Standard or ModelMesh default into the object, never a Knative one.
    if default in ("Standard", "ModelMesh"):
        annotations[DEPLOYMENT_MODE_ANNOTATION] = default


def _convert_shorthand(predictor: PredictorSpec) -> None:
    """``sklearn: {...}`` → ``model: {modelFormat: {name: sklearn}, ...}``; the first one wins."""
    if predictor.model is not None:
        return
    for framework in FRAMEWORKS:
        extension = getattr(predictor, framework)
        if extension is None:
            continue
        fields = msgspec.structs.asdict(extension)
        model = ModelSpec(**fields, model_format=ModelFormat(name=framework))
        if model.protocol_version is None and framework in V2_DEFAULT_FRAMEWORKS:
            model.protocol_version = "v2"
        predictor.model = model
        setattr(predictor, framework, None)
        return


def _default_custom_containers(component: ComponentSpec, config: PlatformConfig) -> None:
    containers = custom_containers(component)
    if not containers:
        return
    if not any(container.name == KSERVE_CONTAINER for container in containers):
        containers[0].name = KSERVE_CONTAINER
    for container in containers:
        if container.name == KSERVE_CONTAINER:
            _default_resources(container, config)


def _default_resources(container: Container, config: PlatformConfig) -> None:
    """Missing CPU and memory requests and limits come from the platform's defaults."""
    resources = container.resources or ResourceRequirements()
    defaults = {"cpu": config.default_cpu, "memory": config.default_memory}
    requests = dict(resources.requests or {})
    limits = dict(resources.limits or {})
    for name in _RESOURCE_NAMES:
        requests.setdefault(name, defaults[name])
        limits.setdefault(name, defaults[name])
    resources.requests, resources.limits = requests, limits
    container.resources = resources
