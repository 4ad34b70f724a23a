"""KServe's validating webhook for ServingRuntimes: auto-selection must stay unambiguous.

Besides the shape of one runtime (a ``kserve-container``, known protocols, priorities >= 1),
KServe refuses a runtime that ties another one of the same scope: same format and version,
same priority, a protocol in common. Without that rule, which runtime serves a model would
depend on creation order (KServe issues #3073, #3180).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from modelhost.control.component_validation import blocked_env_errors
from modelhost.control.errors import FieldError, ValidationError
from modelhost.control.names import KSERVE_CONTAINER, PROTOCOLS
from modelhost.control.objects import AnyRuntime, ServingRuntime

__all__ = ["serving_runtime_errors", "validate_serving_runtime"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def validate_serving_runtime(runtime: AnyRuntime, others: Iterable[AnyRuntime] = ()) -> None:
    """Raise :class:`ValidationError` listing every problem of ``runtime``.

    ``others`` are the runtimes already stored; a runtime of the same name is the one being
    replaced and is not compared with.
    """
    errors = serving_runtime_errors(runtime, others)
    if errors:
        where = f"{runtime.namespace}/" if isinstance(runtime, ServingRuntime) else ""
        raise ValidationError(errors, f"{runtime.kind} {where}{runtime.name}")


def serving_runtime_errors(
    runtime: AnyRuntime, others: Iterable[AnyRuntime] = ()
) -> list[FieldError]:
    errors = list(_shape_errors(runtime))
    errors.extend(_conflicts(runtime, others))
    return errors


def _shape_errors(runtime: AnyRuntime) -> Iterator[FieldError]:
    if not runtime.name:
        yield FieldError("metadata.name", "required")
    elif not _NAME.match(runtime.name) or len(runtime.name) > 253:
        yield FieldError("metadata.name", "must be a lower-case DNS name (a-z, 0-9, '-', '.')")
    spec = runtime.spec
    containers = spec.containers or []
    if not containers:
        yield FieldError("spec.containers", "required: the runtime's containers")
    elif not spec.multi_model and not any(c.name == KSERVE_CONTAINER for c in containers):
        yield FieldError("spec.containers", f"one container must be named {KSERVE_CONTAINER}")
    for index, container in enumerate(containers):
        yield from blocked_env_errors(f"spec.containers[{index}]", container)
    for index, protocol in enumerate(spec.protocol_versions or ()):
        if protocol not in PROTOCOLS:
            yield FieldError(
                f"spec.protocolVersions[{index}]",
                f"Invalid protocol {protocol}. Must be one of [{', '.join(PROTOCOLS)}]",
            )
    priorities: dict[str, int | None] = {}
    for index, entry in enumerate(spec.supported_model_formats or ()):
        field = f"spec.supportedModelFormats[{index}]"
        if not entry.name:
            yield FieldError(f"{field}.name", "required")
        if entry.priority is not None and entry.priority < 1:
            yield FieldError(f"{field}.priority", "must be at least 1")
        if entry.auto_select and entry.name:
            if entry.name in priorities and priorities[entry.name] != entry.priority:
                yield FieldError(
                    f"{field}.priority",
                    f"different priorities assigned for the model format {entry.name}: "
                    "its auto-selected entries must share one",
                )
            priorities.setdefault(entry.name, entry.priority)
    worker = spec.worker_spec
    if worker is not None and len(worker.containers or ()) != 1:
        yield FieldError("spec.workerSpec.containers", "exactly one worker container is needed")


def _conflicts(runtime: AnyRuntime, others: Iterable[AnyRuntime]) -> Iterator[FieldError]:
    if runtime.disabled:
        return
    for other in others:
        if (
            other.kind != runtime.kind
            or other.name == runtime.name
            or other.disabled
            or bool(other.spec.multi_model) != bool(runtime.spec.multi_model)
            or (isinstance(other, ServingRuntime) and other.namespace != _namespace(runtime))
            or not _share_protocol(runtime, other)
        ):
            continue
        for index, entry in enumerate(runtime.spec.supported_model_formats or ()):
            if not entry.auto_select or entry.priority is None:
                continue
            for theirs in other.spec.supported_model_formats or ():
                if theirs.auto_select and (theirs.name, theirs.version, theirs.priority) == (
                    entry.name,
                    entry.version,
                    entry.priority,
                ):
                    version = f" version {entry.version}" if entry.version else ""
                    yield FieldError(
                        f"spec.supportedModelFormats[{index}].priority",
                        f"{other.kind} {other.name} already serves {entry.name}{version} with "
                        f"priority {entry.priority} over a shared protocol: auto-selection "
                        "would be ambiguous; give one of them another priority",
                    )


def _namespace(runtime: AnyRuntime) -> str:
    return runtime.namespace if isinstance(runtime, ServingRuntime) else ""


def _share_protocol(first: AnyRuntime, second: AnyRuntime) -> bool:
    ours, theirs = first.spec.protocol_versions, second.spec.protocol_versions
    # A runtime that lists no protocols speaks them all.
    return not ours or not theirs or bool(set(ours) & set(theirs))
