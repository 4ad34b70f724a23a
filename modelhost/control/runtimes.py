"""Which serving runtime serves a predictor: modelhost's built-in runtimes and KServe's choice.

The built-in ClusterServingRuntimes run ``modelhost serve`` with one of modelhost's runtimes.
Where KServe ships a runtime for the same formats, the built-in one has KServe's name, formats,
versions and priorities (``kserve-sklearnserver``, ``kserve-mlserver``, ...), so KServe YAML
that names a runtime, or relies on auto-selection, gets the same answer. Every built-in speaks
v1, v2 and gRPC v2, because modelhost's server does.

The same objects are what a KServe cluster installs (``modelhost runtimes`` prints them): each
names the modelhost image its runtime needs and takes KServe's argument contract. Applied over
KServe's own runtimes, each replaces KServe's runtime of the same name, and no other runtime
KServe ships ties with one of them (KServe's webhook would refuse the tie).

Selection is KServe's ``GetSupportingRuntimes``: namespaced runtimes before cluster ones; in
each group, the supporting runtimes ordered by lowest protocol, newest, name, then (stably) by
the format's priority, highest first.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modelhost._version import __version__
from modelhost.control.errors import RuntimeSelectionError
from modelhost.control.names import KSERVE_CONTAINER, SERVER_TYPE_ANNOTATION, protocol_rank
from modelhost.control.objects import (
    AnyRuntime,
    ClusterServingRuntime,
    Container,
    InferenceService,
    ModelSpec,
    ObjectMeta,
    ResourceRequirements,
    ServingRuntime,
    ServingRuntimeSpec,
    SupportedModelFormat,
)

__all__ = [
    "DEFAULT_IMAGE_REGISTRY",
    "FULL_IMAGE",
    "LLM_IMAGE",
    "TABULAR_IMAGE",
    "TORCH_IMAGE",
    "SelectedRuntime",
    "builtin_runtimes",
    "image_reference",
    "model_protocol",
    "select_runtime",
    "supporting_runtimes",
]

# The images a built-in runtime runs: ``<registry>/<name>:<modelhost version>``.
DEFAULT_IMAGE_REGISTRY = "modelhost"
TABULAR_IMAGE = "modelhost-tabular"  # scikit-learn, XGBoost, LightGBM, ONNX Runtime, ...
FULL_IMAGE = "modelhost-full"  # the tabular image, plus CatBoost and MLflow
TORCH_IMAGE = "modelhost-torch"  # CPU torch and transformers
LLM_IMAGE = "modelhost-llm"  # torch, transformers and peft: Hugging Face models and LLMs

_ALL_PROTOCOLS = ("v1", "v2", "grpc-v2")
_EPOCH = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)
# KServe's contract with a runtime image: the model's folder and the ports it serves on.
_MODEL_DIR = "/mnt/models"
_HTTP_PORT = 8080
_GRPC_PORT = 8081
# The footprint of the KServe runtimes these replace, so that switching schedules the same;
# a predictor's own resources merge over it. Requests equal limits: Guaranteed QoS.
_RESOURCES = {"cpu": "1", "memory": "2Gi"}
# Kubernetes' "restricted" Pod Security Standard for the container. The images run as uid
# 1000; naming it lets the kubelet check runAsNonRoot whatever the image's USER line says.
_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class _Builtin:
    """A built-in runtime: its (KServe) name, modelhost's runtime, its image, what it serves."""

    name: str
    runtime: str  # ``modelhost serve --runtime``
    image: str
    formats: tuple[tuple[str, str | None, int], ...]  # (format, version, priority)
    protocols: tuple[str, ...] = _ALL_PROTOCOLS


_BUILTINS = (
    _Builtin("kserve-sklearnserver", "sklearn", TABULAR_IMAGE, (("sklearn", "1", 1),)),
    _Builtin("kserve-xgbserver", "xgboost", TABULAR_IMAGE, (("xgboost", "2", 1),)),
    _Builtin("kserve-lgbserver", "lightgbm", TABULAR_IMAGE, (("lightgbm", "4", 1),)),
    _Builtin("kserve-catboostserver", "catboost", FULL_IMAGE, (("catboost", "1", 1),)),
    # KServe's Hugging Face server generates text too: modelhost's llm runtime does that.
    _Builtin(
        "kserve-huggingfaceserver",
        "huggingface",
        LLM_IMAGE,
        (("huggingface", "1", 1),),
        ("v2", "v1", "grpc-v2"),
    ),
    # The ``modelFormat`` annotation (KServe's webhook writes it) is modelhost's runtime name.
    _Builtin(
        "kserve-mlserver",
        "{{.Annotations.modelFormat}}",
        FULL_IMAGE,
        (
            *(("sklearn", v, 2) for v in ("0", "1")),
            *(("xgboost", v, 2) for v in ("1", "2")),
            *(("lightgbm", v, 2) for v in ("3", "4")),
            *(("mlflow", v, 1) for v in ("1", "2")),
        ),
        ("v2", "grpc-v2"),
    ),
    # KServe serves MLflow models over v2 only; modelhost's MLflow runtime speaks v1 too.
    _Builtin(
        "modelhost-mlflowserver",
        "mlflow",
        FULL_IMAGE,
        tuple(("mlflow", v, 2) for v in ("1", "2", "3")),
    ),
    # KServe serves ONNX with Triton (priority 1) or OpenVINO (2): 3 outranks both, so ONNX
    # models go to modelhost once these are installed, and KServe's webhook sees no tie.
    _Builtin("modelhost-onnxserver", "onnx", TABULAR_IMAGE, (("onnx", "1", 3),)),
    # KServe's TorchServe (priority 2) keeps the PyTorch models it serves (model archives).
    _Builtin("modelhost-pytorchserver", "pytorch", TORCH_IMAGE, (("pytorch", "1", 1),)),
    _Builtin("modelhost-customserver", "custom", TABULAR_IMAGE, (("custom", None, 1),)),
)


@dataclass(frozen=True)
class SelectedRuntime:
    """The runtime chosen for a predictor; ``kind`` says which status field records it."""

    name: str
    kind: str  # "ServingRuntime" or "ClusterServingRuntime"
    runtime: AnyRuntime

    @property
    def spec(self) -> ServingRuntimeSpec:
        return self.runtime.spec


def builtin_runtimes(
    image_registry: str = DEFAULT_IMAGE_REGISTRY, tag: str = __version__
) -> list[ClusterServingRuntime]:
    """Fresh copies of modelhost's built-in ClusterServingRuntimes.

    ``image_registry`` replaces ``modelhost`` in their images (a private registry or mirror,
    ``registry.example.com/ml``) and ``tag`` the version.
    """
    return [
        _builtin(entry, image_reference(entry.image, image_registry, tag)) for entry in _BUILTINS
    ]


def image_reference(
    name: str, image_registry: str = DEFAULT_IMAGE_REGISTRY, tag: str = __version__
) -> str:
    """``<registry>/<name>:<tag>``; a trailing ``/`` on the registry is dropped."""
    return f"{image_registry.rstrip('/')}/{name}:{tag}"


def model_protocol(model: ModelSpec) -> str:
    """The protocol a predictor asks for: its ``protocolVersion``, or v1 when unset."""
    return model.protocol_version or "v1"


def supporting_runtimes(
    model: ModelSpec, namespace: str, runtimes: Iterable[AnyRuntime], multi_node: bool = False
) -> list[SelectedRuntime]:
    """The runtimes that may serve ``model``, best first (KServe's auto-selection order)."""
    namespaced: list[AnyRuntime] = []
    cluster: list[AnyRuntime] = []
    for runtime in runtimes:
        if isinstance(runtime, ServingRuntime):
            if runtime.namespace == namespace and _eligible(runtime, model, multi_node):
                namespaced.append(runtime)
        elif _eligible(runtime, model, multi_node):
            cluster.append(runtime)
    format_name = _format(model)[0]
    return [
        _selected(r) for r in (*_ordered(namespaced, format_name), *_ordered(cluster, format_name))
    ]


def select_runtime(
    isvc: InferenceService, runtimes: Sequence[AnyRuntime]
) -> SelectedRuntime | None:
    """The runtime of a defaulted InferenceService's predictor (None for custom containers).

    An explicit ``model.runtime`` is looked up (namespaced first) and checked; otherwise the
    best supporting runtime is chosen. Raises :class:`RuntimeSelectionError` with KServe's
    failure reason when there is none.
    """
    predictor = isvc.spec.predictor
    if predictor is None or predictor.model is None:
        return None
    model = predictor.model
    subject = f"InferenceService {isvc.namespace}/{isvc.name}"
    if model.runtime:
        return _explicit(model, isvc.namespace, runtimes, subject)
    found = supporting_runtimes(model, isvc.namespace, runtimes, predictor.worker_spec is not None)
    if found:
        return found[0]
    name, version = _format(model)
    described = f"{name} (version {version})" if version else name
    message = (
        f"no runtime found to support predictor with model type: {described} and protocol "
        f"version {model_protocol(model)}"
    )
    near = _near_misses(model, isvc.namespace, runtimes)
    if near:
        message += f" ({'; '.join(near)})"
    raise RuntimeSelectionError(
        "spec.predictor.model.modelFormat", message, "NoSupportingRuntime", subject
    )


def _explicit(
    model: ModelSpec, namespace: str, runtimes: Sequence[AnyRuntime], subject: str
) -> SelectedRuntime:
    name = model.runtime
    field = "spec.predictor.model.runtime"
    namespaced = [r for r in runtimes if isinstance(r, ServingRuntime) and r.namespace == namespace]
    cluster = [r for r in runtimes if isinstance(r, ClusterServingRuntime)]
    candidates: list[AnyRuntime] = [*namespaced, *cluster]
    runtime = next((r for r in candidates if r.name == name), None)
    if runtime is None:
        message = (
            f"runtime {name!r} not found: no ServingRuntime of that name in namespace "
            f"{namespace} and no ClusterServingRuntime"
        )
        raise RuntimeSelectionError(field, message, "RuntimeNotRecognized", subject)
    if runtime.disabled:
        message = f"specified runtime {name} is disabled"
        raise RuntimeSelectionError(field, message, "RuntimeDisabled", subject)
    if model.protocol_version is not None and not _speaks(runtime.spec, model.protocol_version):
        offered = ", ".join(runtime.spec.protocol_versions or ())
        message = (
            f"specified runtime {name} does not support specified protocol version "
            f"{model.protocol_version} (it supports {offered})"
        )
        raise RuntimeSelectionError(field, message, "NoSupportingRuntime", subject)
    if not _serves(runtime.spec, model, explicit=True):
        offered = ", ".join(
            _describe(entry) for entry in runtime.spec.supported_model_formats or ()
        )
        message = (
            f"specified runtime {name} does not support specified framework/version "
            f"{_describe_format(model)} (it supports {offered or 'no formats'})"
        )
        raise RuntimeSelectionError(field, message, "NoSupportingRuntime", subject)
    return _selected(runtime)


def _eligible(runtime: AnyRuntime, model: ModelSpec, multi_node: bool) -> bool:
    spec = runtime.spec
    return (
        not runtime.disabled
        and not spec.multi_model
        and (spec.worker_spec is not None) == multi_node
        and _speaks(spec, model_protocol(model))
        and _serves(spec, model, explicit=False)
    )


def _speaks(spec: ServingRuntimeSpec, protocol: str) -> bool:
    """A runtime that lists no protocols speaks every protocol."""
    return not spec.protocol_versions or protocol in spec.protocol_versions


def _serves(spec: ServingRuntimeSpec, model: ModelSpec, explicit: bool) -> bool:
    """KServe's ``mt:<name>[:<version>]`` label match: exact strings; no version matches any.

    Only ``autoSelect`` entries count for auto-selection; a named runtime's entries all count.
    """
    name, version = _format(model)
    for entry in spec.supported_model_formats or ():
        selectable = explicit or entry.auto_select
        if selectable and entry.name == name and (version is None or entry.version == version):
            return True
    return False


def _ordered(runtimes: list[AnyRuntime], format_name: str) -> list[AnyRuntime]:
    def lowest_protocol(runtime: AnyRuntime) -> int:
        protocols = runtime.spec.protocol_versions or ()
        return min((protocol_rank(p) for p in protocols), default=protocol_rank(""))

    def age_key(runtime: AnyRuntime) -> float:
        created = runtime.metadata.creation_timestamp or _EPOCH
        if created.tzinfo is None:
            created = created.replace(tzinfo=datetime.timezone.utc)
        return -(created - _EPOCH).total_seconds()  # newest first

    by_protocol = sorted(runtimes, key=lambda r: (lowest_protocol(r), age_key(r), r.name))

    def priority_key(runtime: AnyRuntime) -> tuple[bool, int]:
        priority = runtime.spec.priority_of(format_name)
        return (priority is None, -(priority or 0))

    return sorted(by_protocol, key=priority_key)  # stable: ties keep the order above


def _near_misses(model: ModelSpec, namespace: str, runtimes: Iterable[AnyRuntime]) -> list[str]:
    """Why the runtimes that know the format were passed over (for the error message)."""
    name, _ = _format(model)
    reasons: list[str] = []
    for runtime in runtimes:
        if isinstance(runtime, ServingRuntime) and runtime.namespace != namespace:
            continue
        spec = runtime.spec
        entries = [e for e in spec.supported_model_formats or () if e.name == name]
        if not entries:
            continue
        if runtime.disabled:
            why = "is disabled"
        elif not _speaks(spec, model_protocol(model)):
            why = f"speaks {', '.join(spec.protocol_versions or ())} only"
        elif not any(e.auto_select for e in entries):
            why = "is not auto-selected for it: name it in model.runtime"
        elif not _serves(spec, model, explicit=False):
            why = f"serves versions {', '.join(str(e.version) for e in entries)}"
        else:
            why = "is a multi-model or multi-node runtime"
        reasons.append(f"{runtime.name} {why}")
    return reasons


def _format(model: ModelSpec) -> tuple[str, str | None]:
    model_format = model.model_format
    if model_format is None:
        return "", None
    return model_format.name or "", model_format.version


def _describe_format(model: ModelSpec) -> str:
    name, version = _format(model)
    return f"{name}:{version}" if version else name


def _describe(entry: SupportedModelFormat) -> str:
    return f"{entry.name}:{entry.version}" if entry.version else str(entry.name)


def _selected(runtime: AnyRuntime) -> SelectedRuntime:
    kind = "ServingRuntime" if isinstance(runtime, ServingRuntime) else "ClusterServingRuntime"
    return SelectedRuntime(runtime.name, kind, runtime)


def _builtin(entry: _Builtin, image: str) -> ClusterServingRuntime:
    # No ``ports``, as KServe's own runtimes: Knative refuses a container with two, and a
    # predictor that names ``h2c`` 8081 for gRPC (KServe's way) would make two. Raw mode
    # exposes 8080 by default. ``command`` is explicit so that the embedded platform, which
    # has no image entrypoint, runs the same process.
    container = Container(
        name=KSERVE_CONTAINER,
        image=image,
        command=["modelhost", "serve"],
        args=[
            "--model_name={{.Name}}",
            f"--model_dir={_MODEL_DIR}",
            f"--runtime={entry.runtime}",
            f"--http_port={_HTTP_PORT}",
            f"--grpc_port={_GRPC_PORT}",
        ],
        resources=ResourceRequirements(requests=dict(_RESOURCES), limits=dict(_RESOURCES)),
        security_context=copy.deepcopy(_SECURITY_CONTEXT),
    )
    return ClusterServingRuntime(
        metadata=ObjectMeta(name=entry.name, annotations={SERVER_TYPE_ANNOTATION: "modelhost"}),
        spec=ServingRuntimeSpec(
            annotations={
                "prometheus.kserve.io/port": str(_HTTP_PORT),
                "prometheus.kserve.io/path": "/metrics",
            },
            supported_model_formats=[
                SupportedModelFormat(name=f, version=v, auto_select=True, priority=p)
                for f, v, p in entry.formats
            ],
            protocol_versions=list(entry.protocols),
            containers=[container],
        ),
    )
