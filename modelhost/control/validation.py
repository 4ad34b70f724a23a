"""KServe's validating webhook for InferenceServices, with every error named by its field.

The rules are KServe's (``inference_service_validation.go``, ``component.go``), run on the
defaulted object as the webhook does; where KServe has a message it is kept, prefixed by the
field's path. Unlike the webhook, every problem of an object is reported at once.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping

from modelhost.control.component_validation import blocked_env_errors, component_errors
from modelhost.control.config import PlatformConfig
from modelhost.control.defaults import custom_containers, deployment_mode
from modelhost.control.errors import FieldError, ValidationError
from modelhost.control.names import (
    AUTOSCALER_CLASS_ANNOTATION,
    AUTOSCALER_CLASSES,
    DEPLOYMENT_MODE_ANNOTATION,
    DEPLOYMENT_MODES,
    LEGACY_DEPLOYMENT_MODES,
    PROTOCOLS,
    TRANSFORMER_CONTAINER,
    normalize_mode,
)
from modelhost.control.objects import (
    FRAMEWORKS,
    Container,
    ExplainerSpec,
    InferenceService,
    PredictorSpec,
)

__all__ = [
    "STORAGE_URI_PREFIXES",
    "inference_service_errors",
    "storage_uri_error",
    "validate_inference_service",
]

NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The controller's allow-list (utils.ValidateStorageURI); a path without a scheme is local.
STORAGE_URI_PREFIXES = (
    "gs://",
    "s3://",
    "pvc://",
    "file://",
    "https://",
    "http://",
    "hdfs://",
    "webhdfs://",
    "oci://",
    "oci+native://",
    "oci+fetch://",
    "hf://",
    # Kubeflow Model Registry's storage initializer (a ClusterStorageContainer in KServe).
    "model-registry://",
)
_SCHEME = re.compile(r"\w+?://")
_ART_TYPES = ("SquareAttack",)


def validate_inference_service(
    isvc: InferenceService,
    config: PlatformConfig | None = None,
    previous: InferenceService | None = None,
) -> None:
    """Raise :class:`ValidationError` listing every problem of a defaulted InferenceService.

    ``previous`` is the stored object when this is an update (the deployment mode and the
    predictor's name may not change freely).
    """
    errors = inference_service_errors(isvc, config or PlatformConfig(), previous)
    if errors:
        raise ValidationError(errors, f"InferenceService {isvc.namespace}/{isvc.name}")


def inference_service_errors(
    isvc: InferenceService, config: PlatformConfig, previous: InferenceService | None = None
) -> list[FieldError]:
    errors = list(_metadata_errors(isvc))
    mode = deployment_mode(isvc, config)
    if previous is not None:
        errors.extend(_update_errors(isvc, previous, config))
    predictor = isvc.spec.predictor
    if predictor is None:
        errors.append(FieldError("spec.predictor", "required: an InferenceService needs one"))
    else:
        errors.extend(_predictor_errors("spec.predictor", predictor))
        errors.extend(component_errors("spec.predictor", predictor, mode, isvc.annotations))
    if isvc.spec.transformer is not None:
        transformer = isvc.spec.transformer
        errors.extend(
            _one_of(
                "spec.transformer",
                "TransformerSpec",
                {"containers": custom_containers(transformer)},
            )
        )
        errors.extend(component_errors("spec.transformer", transformer, mode, isvc.annotations))
    if isvc.spec.explainer is not None:
        errors.extend(_explainer_errors("spec.explainer", isvc.spec.explainer))
        errors.extend(
            component_errors("spec.explainer", isvc.spec.explainer, mode, isvc.annotations)
        )
    if isvc.spec.canary:
        errors.extend(_canary_errors(isvc, mode))
    return errors


def storage_uri_error(field: str, uri: str) -> FieldError | None:
    """The controller's storage URI check: a known scheme, or a local path."""
    if not _SCHEME.match(uri) or uri.startswith(STORAGE_URI_PREFIXES):
        return None
    prefixes = ", ".join(STORAGE_URI_PREFIXES)
    return FieldError(
        field,
        f"storageUri, must be one of: [{prefixes}] or match "
        "https://{}.blob.core.windows.net/{}/{} or be an absolute or relative local path. "
        f"StorageUri [{uri}] is not supported.",
    )


def _metadata_errors(isvc: InferenceService) -> Iterator[FieldError]:
    name = isvc.metadata.name
    if not name:
        yield FieldError("metadata.name", "required")
    elif not NAME_PATTERN.match(name):
        yield FieldError(
            "metadata.name",
            f'The InferenceService "{name}" is invalid: a InferenceService name must consist of '
            "lower case alphanumeric characters or '-', and must start with alphabetical "
            f'character. (e.g. "my-name" or "abc-123", regex used for validation is '
            f"'{NAME_PATTERN.pattern[1:-1]}')",
        )
    namespace = isvc.namespace
    if not _NAMESPACE_PATTERN.match(namespace) or len(namespace) > 63:
        yield FieldError("metadata.namespace", f"{namespace!r} is not a valid namespace name")
    annotations = isvc.annotations
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    field = f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]"
    if mode is not None and normalize_mode(mode) not in DEPLOYMENT_MODES:
        known = ", ".join((*DEPLOYMENT_MODES, *LEGACY_DEPLOYMENT_MODES))
        yield FieldError(field, f"unknown deployment mode {mode!r}: must be one of {known}")
    elif mode is not None and normalize_mode(mode) == "ModelMesh":
        yield FieldError(field, "ModelMesh is not supported by modelhost: use Standard or Knative")
    autoscaler = annotations.get(AUTOSCALER_CLASS_ANNOTATION)
    if autoscaler is not None and autoscaler not in AUTOSCALER_CLASSES:
        yield FieldError(
            f"metadata.annotations[{AUTOSCALER_CLASS_ANNOTATION}]",
            f"[{autoscaler}] is not a supported autoscaler class type: must be one of "
            f"{', '.join(AUTOSCALER_CLASSES)}",
        )


def _update_errors(
    isvc: InferenceService, previous: InferenceService, config: PlatformConfig
) -> Iterator[FieldError]:
    recorded = previous.status.deployment_mode if previous.status is not None else None
    if recorded:
        annotated = isvc.annotations.get(DEPLOYMENT_MODE_ANNOTATION)
        wanted = normalize_mode(annotated or config.default_deployment_mode)
        if wanted != normalize_mode(recorded):
            yield FieldError(
                f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]",
                f"update rejected: deploymentMode cannot be changed from "
                f"{normalize_mode(recorded)} to {wanted}",
            )
    old, new = previous.spec.predictor, isvc.spec.predictor
    renamed = old is not None and new is not None and old.name != new.name
    if renamed and _storage_uri(old) == _storage_uri(new):
        yield FieldError(
            "spec.predictor.name",
            "the predictor's name may change only together with its model (storageUri)",
        )


def _storage_uri(predictor: PredictorSpec | None) -> str | None:
    if predictor is None or predictor.model is None:
        return None
    return predictor.model.storage_uri


def _one_of(field: str, type_name: str, candidates: Mapping[str, object]) -> Iterator[FieldError]:
    """KServe's "exactly one implementation" rule for a component."""
    given = [name for name, value in candidates.items() if value]
    if len(given) != 1:
        found = f"; found {', '.join(given)}" if given else "; found none"
        yield FieldError(
            field,
            f"exactly one of [{', '.join(candidates)}] must be specified in {type_name}{found}",
        )


def _predictor_errors(field: str, predictor: PredictorSpec) -> Iterator[FieldError]:
    implementations: dict[str, object] = {name: predictor.framework(name) for name in FRAMEWORKS}
    implementations["model"] = predictor.model
    implementations["containers"] = custom_containers(predictor)
    yield from _one_of(field, "PredictorSpec", implementations)
    if predictor.name is not None and not NAME_PATTERN.match(predictor.name):
        yield FieldError(f"{field}.name", f"must match {NAME_PATTERN.pattern}")
    for name in (*FRAMEWORKS, "model"):
        extension = predictor.model if name == "model" else predictor.framework(name)
        if extension is None:
            continue
        path = f"{field}.{name}"
        if extension.name:
            yield FieldError(
                f"{path}.name", "the 'name' field is not allowed in standard predictor"
            )
        protocol = extension.protocol_version
        if protocol is not None and protocol not in PROTOCOLS:
            yield FieldError(
                f"{path}.protocolVersion",
                f"Invalid protocol {protocol}. Must be one of [{', '.join(PROTOCOLS)}]",
            )
        if extension.storage_uri:
            if predictor.storage_uris:
                yield FieldError(
                    f"{field}.storageUris", "storageUri and storageUris cannot be used together"
                )
            if error := storage_uri_error(f"{path}.storageUri", extension.storage_uri):
                yield error
        yield from blocked_env_errors(path, extension)
    model = predictor.model
    if model is not None and (model.model_format is None or not model.model_format.name):
        yield FieldError(f"{field}.model.modelFormat.name", "required: the model's format")
    yield from _storage_uris_errors(field, predictor)
    if predictor.worker_spec is not None:
        yield from _worker_errors(field, predictor)
    for index, container in enumerate(predictor.containers or ()):
        if container.name == TRANSFORMER_CONTAINER:
            for env_index, env in enumerate(container.env or ()):
                if env.name == "STORAGE_URI":
                    yield FieldError(
                        f"{field}.containers[{index}].env[{env_index}]",
                        "a collocated transformer-container must not set STORAGE_URI",
                    )


def _storage_uris_errors(field: str, predictor: PredictorSpec) -> Iterator[FieldError]:
    pvc_paths: set[str] = set()
    other_paths: list[str] = []
    for index, entry in enumerate(predictor.storage_uris or ()):
        path = f"{field}.storageUris[{index}]"
        mount = entry.mount_path or "/mnt/models"
        if not entry.uri:
            yield FieldError(f"{path}.uri", "required")
        elif error := storage_uri_error(f"{path}.uri", entry.uri):
            yield error
        if not mount.startswith("/") or ".." in mount.split("/") or len(mount) > 255:
            yield FieldError(f"{path}.mountPath", "must be an absolute path without '..'")
        elif entry.uri.startswith("pvc://"):
            if mount in pvc_paths:
                yield FieldError(f"{path}.mountPath", f"{mount} is used by another PVC")
            pvc_paths.add(mount)
        else:
            other_paths.append(mount)
    if len(other_paths) > 1 and posixpath.commonpath(other_paths) == "/":
        yield FieldError(
            f"{field}.storageUris",
            "the mount paths of non-PVC storageUris need a common parent folder other than /",
        )


def _worker_errors(field: str, predictor: PredictorSpec) -> Iterator[FieldError]:
    worker = predictor.worker_spec
    assert worker is not None
    path = f"{field}.workerSpec"
    if len(worker.containers or ()) > 1:
        yield FieldError(f"{path}.containers", "only one worker container is allowed")
    for container in (*(worker.containers or ()), predictor.model or Container()):
        for env in container.env or ():
            if env.name in ("PIPELINE_PARALLEL_SIZE", "TENSOR_PARALLEL_SIZE"):
                yield FieldError(path, f"{env.name} may not be set: use the workerSpec field")
    uri = _storage_uri(predictor) or ""
    if not uri.startswith(("pvc://", "oci://")):
        yield FieldError(f"{field}.model.storageUri", "multi-node serving needs a pvc:// or oci://")
    for name, value in (
        ("pipelineParallelSize", worker.pipeline_parallel_size),
        ("tensorParallelSize", worker.tensor_parallel_size),
    ):
        if value is not None and value < 1:
            yield FieldError(f"{path}.{name}", "must be at least 1")


def _explainer_errors(field: str, explainer: ExplainerSpec) -> Iterator[FieldError]:
    candidates = {"art": explainer.art, "containers": custom_containers(explainer)}
    yield from _one_of(field, "ExplainerSpec", candidates)
    art = explainer.art
    if art is not None:
        if art.type not in _ART_TYPES:
            yield FieldError(f"{field}.art.type", f"must be one of {', '.join(_ART_TYPES)}")
        if art.storage_uri and (
            error := storage_uri_error(f"{field}.art.storageUri", art.storage_uri)
        ):
            yield error


def _canary_errors(isvc: InferenceService, mode: str) -> Iterator[FieldError]:
    if mode != "Standard":
        yield FieldError("spec.canary", "spec.canary needs the Standard deployment mode")
    stable = isvc.spec.predictor
    if stable is not None and stable.model is None:
        yield FieldError("spec.predictor.model", "spec.canary needs a stable predictor with model")
    names: set[str] = set()
    total = 0
    stable_min = 1 if stable is None or stable.min_replicas is None else stable.min_replicas
    for index, canary in enumerate(isvc.spec.canary or ()):
        field = f"spec.canary[{index}]"
        predictor = canary.predictor
        if predictor is None:
            yield FieldError(f"{field}.predictor", "required")
            continue
        if not predictor.name:
            yield FieldError(f"{field}.predictor.name", "required: each canary needs a name")
        elif predictor.name in names or (stable is not None and predictor.name == stable.name):
            yield FieldError(f"{field}.predictor.name", "must be unique and differ from the stable")
        names.add(predictor.name or "")
        percent = canary.traffic_percent or 0
        if not 0 <= percent <= 100:
            yield FieldError(f"{field}.trafficPercent", "must be between 0 and 100")
        total += percent
        for name, value in (
            ("workerSpec", predictor.worker_spec),
            ("maxReplicas", predictor.max_replicas),
            ("scaleTarget", predictor.scale_target),
            ("scaleMetric", predictor.scale_metric),
            ("autoScaling", predictor.auto_scaling),
        ):
            if value is not None:
                yield FieldError(f"{field}.predictor.{name}", "not allowed on a canary")
        if predictor.min_replicas is not None and predictor.min_replicas > stable_min:
            yield FieldError(
                f"{field}.predictor.minReplicas", "may not exceed the stable predictor's"
            )
    if total > 100:
        yield FieldError("spec.canary", f"the traffic percents add up to {total}, more than 100")
