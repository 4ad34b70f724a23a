"""The planner: an InferenceService (and the runtimes, and the last status) → a ServicePlan.

One pure function, :func:`plan`, used unchanged by every executor. It defaults and validates
the object, picks the predictor's runtime, builds each component's newest revision (named by
a hash of what its replicas run), and decides traffic as KServe's Knative mode does with
``canaryTrafficPercent``: the status's last rolled-out revision is the one a canary splits
with, and the one a rollback (``canaryTrafficPercent: 0``) returns to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence

from modelhost.control import _render
from modelhost.control.config import PlatformConfig
from modelhost.control.defaults import apply_defaults, custom_containers, deployment_mode
from modelhost.control.errors import ValidationError
from modelhost.control.names import (
    ENABLE_TAG_ROUTING_ANNOTATION,
    KSERVE_CONTAINER,
    STOP_ANNOTATION,
    protocol_rank,
)
from modelhost.control.objects import (
    AnyRuntime,
    ComponentSpec,
    ExplainerSpec,
    InferenceService,
    InferenceServiceStatus,
    ModelSpec,
    PredictorSpec,
)
from modelhost.control.plan_types import (
    BatcherPlan,
    ComponentPlan,
    LoggerPlan,
    ProcessSpec,
    Revision,
    Route,
    ServicePlan,
    StorageSpecPlan,
    TrafficSplit,
)
from modelhost.control.runtimes import SelectedRuntime, builtin_runtimes, select_runtime
from modelhost.control.scaling import scaling_policy
from modelhost.control.validation import validate_inference_service
from modelhost.errors import Unsupported

__all__ = ["EXPLAINER_ANNOTATION", "EXPLAIN_PATH", "digest", "ingress_host", "plan"]

# modelhost's own: the predictor answers :explain with SHAP or LIME (``serve --explainer``).
EXPLAINER_ANNOTATION = "serving.modelhost.dev/explainer"
EXPLAINER_METHODS = ("shap", "lime")
# KServe's top-level route sends this to the explainer, everything else to the entry component.
EXPLAIN_PATH = r"/v1/models/[\w-]+:explain"
# ProcessSpec fields left out of a revision's digest while unset (see digest).
_LATER_PROCESS_FIELDS = ("storage",)


def plan(
    isvc: InferenceService,
    runtimes: Sequence[AnyRuntime] | None = None,
    *,
    config: PlatformConfig | None = None,
    previous: InferenceServiceStatus | None = None,
) -> ServicePlan:
    """The desired state of ``isvc``.

    ``runtimes`` are the ServingRuntimes and ClusterServingRuntimes that exist (None: the
    built-in ones); ``previous`` is the status recorded so far (default: ``isvc.status``),
    whose ``components.<c>.latestRolledoutRevision`` drives canary traffic. Raises
    :class:`~modelhost.control.errors.ValidationError` (a 400) when the object is invalid or
    no runtime can serve it, and :class:`~modelhost.errors.Unsupported` for ``spec.canary``.
    """
    config = config or PlatformConfig()
    isvc = apply_defaults(isvc, config)
    validate_inference_service(isvc, config)
    if isvc.spec.canary:
        # Refused rather than ignored: silently serving only the stable model is the very
        # surprise KServe issue #5335 describes.
        raise Unsupported(
            "spec.canary (KServe 0.20's Standard-mode canaries) is not supported yet: "
            "use canaryTrafficPercent in the Knative deployment mode"
        )
    previous = previous if previous is not None else isvc.status
    mode = deployment_mode(isvc, config)
    predictor = isvc.spec.predictor
    assert predictor is not None  # validation requires it
    selected = select_runtime(isvc, builtin_runtimes() if runtimes is None else runtimes)
    planning = _Planning(isvc, mode, config, previous)
    entry = "transformer" if isvc.spec.transformer is not None else "predictor"
    components = [_component(planning, "predictor", predictor, selected)]
    if isvc.spec.transformer is not None:
        components.append(_component(planning, "transformer", isvc.spec.transformer))
    if isvc.spec.explainer is not None:
        components.append(_component(planning, "explainer", isvc.spec.explainer))
    host = ingress_host(isvc.name, isvc.namespace, mode, config)
    entry_component = next(c for c in components if c.component == entry)
    address_name = isvc.name if mode == "Knative" else entry_component.service_name
    return ServicePlan(
        name=isvc.name,
        namespace=isvc.namespace,
        generation=isvc.metadata.generation or 1,
        deployment_mode=mode,
        host=host,
        url=f"{config.url_scheme}://{host}",
        address_url=f"http://{address_name}.{isvc.namespace}.svc.cluster.local",
        entry=entry,
        components=tuple(components),
        routes=_routes(host, entry_component, components),
        protocol=components[0].revision.protocol,
        model_format=_model_format(predictor),
        runtime=selected.name if selected else None,
        runtime_kind=selected.kind if selected else None,
        stopped=isvc.annotations.get(STOP_ANNOTATION, "").lower() == "true",
        warnings=tuple(planning.warnings),
    )


@dataclasses.dataclass
class _Planning:
    """What every step of one planning needs; ``warnings`` collects what it could not do."""

    isvc: InferenceService
    mode: str
    config: PlatformConfig
    previous: InferenceServiceStatus | None
    warnings: list[str] = dataclasses.field(default_factory=list)


def _component(
    planning: _Planning, kind: str, spec: ComponentSpec, selected: SelectedRuntime | None = None
) -> ComponentPlan:
    isvc, mode, config = planning.isvc, planning.mode, planning.config
    batcher = _batcher(spec, config)
    process, protocol = _process(planning, kind, spec, selected, batcher)
    service_name = _service_name(isvc.name, kind, spec)
    revision = Revision(
        name="",
        component=kind,
        process=process,
        protocol=protocol,
        container_concurrency=spec.container_concurrency or 0,
        timeout_s=spec.timeout
        or (config.knative_timeout_s if mode == "Knative" else config.standard_timeout_s),
        logger=_logger(spec, isvc, config),
        batcher=batcher,
    )
    revision = dataclasses.replace(revision, name=f"{service_name}-{digest(revision)}")
    previous = planning.previous
    status = (previous.components or {}).get(kind) if previous is not None else None
    rolled_out = status.latest_rolledout_revision if status is not None else None
    before = status.previous_rolledout_revision if status is not None else None
    percent = spec.canary_traffic_percent
    if mode != "Knative" and percent is not None:
        planning.warnings.append(
            f"spec.{kind}.canaryTrafficPercent is ignored in {mode} mode, as in KServe "
            "(its canaries are spec.canary); all traffic goes to the latest revision"
        )
        percent = None
    tags = isvc.annotations.get(ENABLE_TAG_ROUTING_ANNOTATION, "").lower() == "true"
    host = ingress_host(service_name, isvc.namespace, mode, config)
    return ComponentPlan(
        component=kind,
        service_name=service_name,
        host=host,
        url=f"{config.url_scheme}://{host}",
        model_name=_render.flag_value(process.args, ("--model_name", "--model-name", "--name"))
        or isvc.name,
        revision=revision,
        traffic=_traffic(revision.name, percent, rolled_out, before, tags),
        scaling=scaling_policy(
            spec, mode, isvc.annotations, config, field=f"spec.{kind}", warnings=planning.warnings
        ),
        calls={"transformer": "predictor", "explainer": _explainer_upstream(isvc)}.get(kind),
    )


def _traffic(
    latest: str, percent: int | None, rolled_out: str | None, before: str | None, tags: bool
) -> tuple[TrafficSplit, ...]:
    """Knative-mode canary: N% to the latest, the rest to the last rolled-out revision.

    When the latest *is* the rolled-out revision (an unchanged spec after a promotion), the
    split is with the one rolled out before it: that is where KServe's status logic settles a
    rollback after a promotion, in one step here instead of two reconciles.
    """
    stable = rolled_out if rolled_out != latest else before
    if percent is None or percent >= 100 or not stable or stable == latest:
        return (TrafficSplit(latest, 100, latest=True, tag="latest" if tags else None),)
    return (
        TrafficSplit(latest, percent, latest=True, tag="latest" if tags else None),
        TrafficSplit(stable, 100 - percent, tag="prev" if tags else None),
    )


def _process(
    planning: _Planning,
    kind: str,
    spec: ComponentSpec,
    selected: SelectedRuntime | None,
    batcher: BatcherPlan | None,
) -> tuple[ProcessSpec, str]:
    isvc, warnings = planning.isvc, planning.warnings
    if isinstance(spec, PredictorSpec) and spec.model is not None and selected is not None:
        model = spec.model
        protocol = model.protocol_version or _lowest_protocol(selected)
        if spec.containers:
            warnings.append(
                f"spec.{kind}: the collocated {spec.containers[0].name} container is planned "
                "for Kubernetes only; the model server runs alone"
            )
        storage = _storage_spec(planning, f"spec.{kind}.model", model)
        process = _render.runtime_process(isvc, model, selected, protocol, batcher, storage)
        return _with_explainer(planning, process, selected), protocol
    if isinstance(spec, ExplainerSpec) and spec.art is not None:
        return _render.art_process(isvc, spec.art), "v1"
    containers = custom_containers(spec)
    main = next(c for c in containers if c.name == KSERVE_CONTAINER)
    if len(containers) > 1:
        warnings.append(
            f"spec.{kind}: only the {KSERVE_CONTAINER} container is planned as a process; "
            "the other containers of the pod run on Kubernetes only"
        )
    process = _render.custom_process(
        isvc,
        main,
        calls_predictor=kind != "predictor",
        container_concurrency=spec.container_concurrency,
    )
    return process, "v1"


def _with_explainer(
    planning: _Planning, process: ProcessSpec, selected: SelectedRuntime
) -> ProcessSpec:
    """The predictor answers ``:explain`` itself when the annotation asks (``--explainer``)."""
    method = planning.isvc.annotations.get(EXPLAINER_ANNOTATION)
    if method is None:
        return process
    field = f"metadata.annotations[{EXPLAINER_ANNOTATION}]"
    if method not in EXPLAINER_METHODS:
        raise ValidationError.single(
            field,
            f"Unsupported value: {method!r}: supported values: {', '.join(EXPLAINER_METHODS)}",
            f"InferenceService {planning.isvc.namespace}/{planning.isvc.name}",
        )
    if _render.server_type(selected) != "modelhost":
        planning.warnings.append(
            f"{field} is ignored: runtime {selected.name} is not modelhost's own server"
        )
        return process
    return dataclasses.replace(process, args=(*process.args, f"--explainer={method}"))


def _storage_spec(planning: _Planning, field: str, model: ModelSpec) -> StorageSpecPlan | None:
    """KServe's storage spec, resolved as far as a plan can without reading the Secret.

    The storage type and bucket are in the Secret, so the URI is built where the Secret is
    read (the storage initializer); here the key is chosen as KServe's webhook does.
    """
    spec = model.storage
    if spec is None:
        return None
    path = (spec.path or "").lstrip("/") or None
    secret = planning.config.storage_spec_secret
    subject = f"InferenceService {planning.isvc.namespace}/{planning.isvc.name}"
    if secret is None:
        # No Secret store: refuse a model only the Secret can locate; a storageUri is still
        # fetched, with the platform's own credentials instead of the Secret's.
        if path is None and model.storage_uri:
            planning.warnings.append(
                f"{field}.storage: ignored: this platform has no Secret store to read the "
                "storage configuration from, so storageUri is fetched with its own credentials"
            )
            return None
        raise ValidationError.single(
            f"{field}.storage",
            "this platform has no Secret store to read KServe's storage-config from: give "
            "storageUri (s3://bucket/path) with the credentials in the platform's environment",
            subject,
        )
    if path is None and not model.storage_uri:
        raise ValidationError.single(
            f"{field}.storage.path",
            "Required value: the model's path in the storage's bucket (or give storageUri)",
            subject,
        )
    if spec.schema_path:
        planning.warnings.append(
            f"{field}.storage.schemaPath is ModelMesh's and is not used (as in KServe)"
        )
    parameters = dict(spec.parameters or {})
    key = spec.key or spec.storage_key
    if key:
        return StorageSpecPlan(secret, key, path=path, parameters=tuple(sorted(parameters.items())))
    # KServe's fallback key: the default entry of the type the parameters name, which the
    # Secret may lack (the parameters then describe the storage themselves).
    fallback = f"default_{parameters['type']}" if parameters.get("type") else "default"
    return StorageSpecPlan(
        secret,
        fallback,
        key_optional=True,
        path=path,
        parameters=tuple(sorted(parameters.items())),
    )


def _lowest_protocol(selected: SelectedRuntime) -> str:
    """KServe gives a predictor without protocolVersion its runtime's lowest protocol."""
    protocols = selected.spec.protocol_versions or ["v1"]
    return min(protocols, key=protocol_rank)


def _logger(
    spec: ComponentSpec, isvc: InferenceService, config: PlatformConfig
) -> LoggerPlan | None:
    logger = spec.logger
    if logger is None:
        return None
    annotations = isvc.annotations
    return LoggerPlan(
        url=logger.url or config.logger_default_url,
        mode=logger.mode or "all",
        metadata_headers=tuple(logger.metadata_headers or ()),
        metadata_annotations=tuple(
            (key, annotations[key])
            for key in logger.metadata_annotations or ()
            if key in annotations
        ),
    )


def _batcher(spec: ComponentSpec, config: PlatformConfig) -> BatcherPlan | None:
    batcher = spec.batcher
    if batcher is None:
        return None
    return BatcherPlan(
        max_batch_size=batcher.max_batch_size or config.batcher_max_batch_size,
        max_latency_ms=batcher.max_latency or config.batcher_max_latency_ms,
        timeout_s=batcher.timeout,
    )


def _routes(
    host: str, entry: ComponentPlan, components: Sequence[ComponentPlan]
) -> tuple[Route, ...]:
    """Host routes as KServe's ingress, then host-less routes by the model name in the path."""
    has_explainer = any(c.component == "explainer" for c in components)
    routes: list[Route] = []
    if has_explainer:
        routes.append(Route("explainer", host=host, path=EXPLAIN_PATH))
    routes.append(Route(entry.component, host=host))
    routes.extend(Route(c.component, host=c.host) for c in components)
    name = re.escape(entry.model_name)
    if has_explainer:
        routes.append(Route("explainer", path=rf"/v1/models/{name}:explain"))
    routes.append(Route(entry.component, path=rf"/v1/models/{name}(:[a-z]+)?"))
    routes.append(Route(entry.component, path=rf"/v2/models/{name}(/.*)?"))
    routes.append(Route(entry.component, path=r"/openai/.*", model=entry.model_name))
    return tuple(routes)


def ingress_host(name: str, namespace: str, mode: str, config: PlatformConfig) -> str:
    if mode == "Knative":
        return f"{name}.{namespace}.{config.ingress_domain}"
    return config.domain_template.format(
        name=name, namespace=namespace, domain=config.ingress_domain
    )


def _service_name(isvc_name: str, kind: str, spec: ComponentSpec) -> str:
    """``<isvc>-predictor``, or ``<isvc>-<name>-predictor`` for a named predictor."""
    if isinstance(spec, PredictorSpec) and spec.name:
        return f"{isvc_name}-{spec.name}-{kind}"
    return f"{isvc_name}-{kind}"


def _explainer_upstream(isvc: InferenceService) -> str:
    """KServe's explainer calls the transformer when there is one, else the predictor."""
    return "transformer" if isvc.spec.transformer is not None else "predictor"


def _model_format(predictor: PredictorSpec) -> str | None:
    model = predictor.model
    return model.model_format.name if model is not None and model.model_format else None


def digest(revision: Revision) -> str:
    """A short, stable hash of everything a revision's replicas run with."""
    fields = dataclasses.asdict(revision)
    # Fields added since revisions were first named count only when set: an upgrade must not
    # rename (and so restart) every running revision.
    for name in _LATER_PROCESS_FIELDS:
        if fields["process"][name] is None:
            del fields["process"][name]
    content = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:10]
