"""From a component's spec (and its runtime) to the process one replica runs.

KServe builds a pod: the runtime's ``kserve-container`` with the predictor's ``model:``
container fields merged over it (args concatenated, env and resources merged by name), Go
template placeholders rendered against the InferenceService's metadata, and the model
mounted at ``/mnt/models``. The same container here becomes a :class:`ProcessSpec` whose
ports and model folder are placeholders, so that the embedded executor can run many replicas
on one machine and the Kubernetes executor can fill in 8080, 8081 and ``/mnt/models``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from modelhost.control.errors import ValidationError
from modelhost.control.names import SERVER_TYPE_ANNOTATION
from modelhost.control.objects import (
    ARTExplainerSpec,
    Container,
    EnvVar,
    InferenceService,
    ModelSpec,
    ObjectMeta,
)
from modelhost.control.plan_types import BatcherPlan, ProcessSpec, StorageSpecPlan
from modelhost.control.runtimes import SelectedRuntime

__all__ = [
    "MODEL_MOUNT",
    "art_process",
    "custom_process",
    "flag_value",
    "runtime_process",
    "server_type",
]

MODEL_MOUNT = "/mnt/models"
ART_IMAGE = "kserve/art-explainer"
_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_FIELD = re.compile(r"^\.(?:ObjectMeta\.)?(Name|Namespace)$")
_MAP_KEY = re.compile(r"^\.(?:ObjectMeta\.)?(Annotations|Labels)\.([\w.\-/]+)$")
_INDEX = re.compile(r'^index\s+\.(?:ObjectMeta\.)?(Annotations|Labels)\s+"([^"]+)"$')
_HTTP_PORT = ("--http_port", "--http-port")
_GRPC_PORT = ("--grpc_port", "--grpc-port")
# Runtimes that predate the server-type annotation are recognised by KServe's names.
_SERVER_TYPES_BY_NAME = {
    "kserve-mlserver": "mlserver",
    "kserve-tritonserver": "tritonserver",
    "kserve-torchserve": "torchserve",
}


def server_type(selected: SelectedRuntime) -> str:
    annotations = selected.runtime.metadata.annotations or {}
    return annotations.get(SERVER_TYPE_ANNOTATION) or _SERVER_TYPES_BY_NAME.get(selected.name, "")


def runtime_process(
    isvc: InferenceService,
    model: ModelSpec,
    selected: SelectedRuntime,
    protocol: str,
    batcher: BatcherPlan | None,
    storage: StorageSpecPlan | None = None,
) -> ProcessSpec:
    """The runtime's ``kserve-container`` with the model's container fields merged over it.

    ``storage`` is the model's storage spec as the planner resolved it: with a path it locates
    the model on its own, so the model folder is a placeholder as for a ``storageUri``.
    """
    base = next(c for c in selected.spec.containers or () if c.name == "kserve-container")
    field = f"{selected.kind} {selected.name}: spec.containers[kserve-container]"
    command = [_render(text, isvc.metadata, field) for text in model.command or base.command or ()]
    args = [
        _render(text, isvc.metadata, field) for text in (*(base.args or ()), *(model.args or ()))
    ]
    env = _merge_env(base.env, model.env)
    env = {name: _render(value, isvc.metadata, field) for name, value in env.items()}
    storage_uri = model.storage_uri
    has_model = bool(storage_uri) or storage is not None
    kind = server_type(selected)
    _server_defaults(kind, isvc.name, has_model, protocol, args, env)
    if has_model:
        args = [_mount_to_placeholder(arg) for arg in args]
        env = {name: _mount_to_placeholder(value) for name, value in env.items()}
    args = _set_flag(args, _HTTP_PORT, "{http_port}", append=kind == "modelhost")
    args = _set_flag(args, _GRPC_PORT, "{grpc_port}", append=kind == "modelhost")
    if kind == "modelhost" and batcher is not None:
        args = _set_flag(args, ("--max_batch_size",), str(batcher.max_batch_size), append=True)
        args = _set_flag(args, ("--max_latency_ms",), str(batcher.max_latency_ms), append=True)
    return ProcessSpec(
        command=tuple(command),
        args=tuple(args),
        env=_common_env(env, isvc.name),
        image=_image(model.image or base.image, model.runtime_version),
        working_dir=model.working_dir or base.working_dir,
        storage_uri=storage_uri,
        resources=_resources((base, model)),
        storage=storage,
    )


def custom_process(
    isvc: InferenceService,
    container: Container,
    *,
    calls_predictor: bool,
    container_concurrency: int | None,
) -> ProcessSpec:
    """A custom container; a transformer or explainer gets KServe's predictor flags added.

    As KServe's transformer does, ``--model_name``, ``--predictor_host`` and ``--http_port``
    are appended unless set (and ``--workers`` from containerConcurrency); modelhost adds
    ``--grpc_port`` so replicas on one machine do not collide. A STORAGE_URI variable names
    the model to fetch; the process sees the local folder in its place.
    """
    args = list(container.args or ())
    env = _merge_env(container.env, None)
    storage_uri = env.get("STORAGE_URI")
    if storage_uri:
        env["STORAGE_URI"] = "{model_dir}"
    if calls_predictor:
        if flag_value(args, ("--model_name",)) is None:
            args += ["--model_name", isvc.name]
        if flag_value(args, ("--predictor_host",)) is None:
            args += ["--predictor_host", "{predictor_host}"]
        if container_concurrency and flag_value(args, ("--workers",)) is None:
            args += ["--workers", str(container_concurrency)]
    args = _set_flag(args, _HTTP_PORT, "{http_port}", append=calls_predictor)
    args = _set_flag(args, _GRPC_PORT, "{grpc_port}", append=calls_predictor)
    return ProcessSpec(
        command=tuple(container.command or ()),
        args=tuple(args),
        env=_common_env(env, isvc.name),
        image=container.image,
        working_dir=container.working_dir,
        storage_uri=storage_uri or None,
        resources=_resources((container,)),
    )


def art_process(isvc: InferenceService, art: ARTExplainerSpec) -> ProcessSpec:
    """KServe's ART explainer image: its entrypoint takes the adversary type and config."""
    args = [
        "--model_name",
        isvc.name,
        "--predictor_host",
        "{predictor_host}",
        "--http_port",
        "{http_port}",
        "--adversary_type",
        art.type or "SquareAttack",
    ]
    for key, value in sorted((art.config or {}).items()):
        args += [f"--{key}", value]
    args += list(art.args or ())
    return ProcessSpec(
        command=tuple(art.command or ()),
        args=tuple(args),
        env=_common_env(_merge_env(art.env, None), isvc.name),
        image=art.image or f"{ART_IMAGE}:{art.runtime_version or 'latest'}",
        storage_uri=art.storage_uri,
        resources=_resources((art,)),
    )


def flag_value(args: Sequence[str], names: Sequence[str]) -> str | None:
    """The last value given to one of the flags ``names`` (``--x=v`` or ``--x v``)."""
    value: str | None = None
    for index, arg in enumerate(args):
        name, sep, inline = arg.partition("=")
        if name in names:
            if sep:
                value = inline
            elif index + 1 < len(args):
                value = args[index + 1]
    return value


def _set_flag(args: list[str], names: Sequence[str], value: str, *, append: bool) -> list[str]:
    """Every value of the flag replaced by ``value``; appended when absent and ``append``."""
    result: list[str] = []
    found = False
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name, sep, _ = arg.partition("=")
        if name in names:
            found = True
            result.append(f"{name}={value}")
            skip = not sep and index + 1 < len(args) and not args[index + 1].startswith("--")
            continue
        result.append(arg)
    if not found and append:
        result.append(f"{names[0]}={value}")
    return result


def _render(text: str, meta: ObjectMeta, field: str) -> str:
    """KServe's Go-template placeholders over the InferenceService's metadata."""

    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        if found := _FIELD.match(expression):
            return (meta.name or "") if found[1] == "Name" else (meta.namespace or "default")
        found = _MAP_KEY.match(expression) or _INDEX.match(expression)
        if found:
            source = meta.annotations if found[1] == "Annotations" else meta.labels
            return (source or {}).get(found[2], "")
        raise ValidationError.single(field, f"unsupported template {match.group(0)!r} in {text!r}")

    return _TEMPLATE.sub(value, text)


def _mount_to_placeholder(text: str) -> str:
    """``/mnt/models`` (alone, after ``=``, or as a path prefix) → the model placeholder."""
    prefix, sep, value = text.rpartition("=") if "=" in text else ("", "", text)
    if value == MODEL_MOUNT or value.startswith(MODEL_MOUNT + "/"):
        value = "{model_dir}" + value[len(MODEL_MOUNT) :]
    return f"{prefix}{sep}{value}"


def _server_defaults(
    kind: str,
    isvc_name: str,
    has_model: bool,
    protocol: str,
    args: list[str],
    env: dict[str, str],
) -> None:
    """KServe's per-server-type defaults (SetRuntimeDefaults), for runtimes applied from KServe."""
    if kind == "mlserver":
        env.setdefault("MLSERVER_MODEL_NAME", isvc_name)
        if has_model:
            env.setdefault("MLSERVER_MODEL_URI", MODEL_MOUNT)
        else:
            env.setdefault("MLSERVER_LOAD_MODELS_AT_STARTUP", "false")
    elif kind == "tritonserver" and not has_model:
        if flag_value(args, ("--model-control-mode",)) is None:
            args.append("--model-control-mode=explicit")
    elif kind == "torchserve":
        env.setdefault("PROTOCOL_VERSION", protocol)


def _merge_env(base: Iterable[EnvVar] | None, override: Iterable[EnvVar] | None) -> dict[str, str]:
    """Environment by name, ``override`` winning (variables from secrets are the executor's)."""
    env: dict[str, str] = {}
    for variable in (*(base or ()), *(override or ())):
        if variable.value is not None:
            env[variable.name] = variable.value
    return env


def _common_env(env: Mapping[str, str], isvc_name: str) -> tuple[tuple[str, str], ...]:
    """KServe adds INFERENCE_SERVICE_NAME to every container; Knative sets (and reserves) PORT."""
    merged = {**env, "INFERENCE_SERVICE_NAME": isvc_name, "PORT": "{http_port}"}
    return tuple(sorted(merged.items()))


def _image(image: str | None, runtime_version: str | None) -> str | None:
    """``runtimeVersion`` replaces the image's tag, except for a digest-pinned image."""
    if not image or not runtime_version or "@sha256:" in image:
        return image
    head, slash, last = image.rpartition("/")
    repository = last.split(":", 1)[0]
    return f"{head}{slash}{repository}:{runtime_version}"


def _resources(containers: Iterable[Container]) -> tuple[tuple[str, str, str], ...]:
    """Requests and limits merged by resource name, later containers winning."""
    merged: dict[tuple[str, str], str] = {}
    for container in containers:
        resources = container.resources
        if resources is None:
            continue
        for kind, values in (("requests", resources.requests), ("limits", resources.limits)):
            for name, quantity in (values or {}).items():
                merged[(kind, name)] = str(quantity)
    return tuple(sorted((kind, name, value) for (kind, name), value in merged.items()))
