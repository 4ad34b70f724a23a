"""Which parts of an object would run code of the user's choosing: only an admin may apply those.

The embedded platform runs what an object names on this machine, as its own user. A
custom ``command`` or container, a ``--model_class``, a runtime of one's own, or an
environment variable that makes Python or the loader read other code (``PYTHONPATH``,
``LD_PRELOAD``) is arbitrary code; a built-in runtime given a model and the server's own
flags is not. An InferenceGraph step's ``serviceUrl`` is held to the same rule: the router
would post to any address the platform can reach. :func:`user_code` lists the field paths
of the first kind, so that an error can say which field needs an admin.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from modelhost.control.objects import (
    FRAMEWORKS,
    ClusterServingRuntime,
    InferenceGraph,
    InferenceService,
    ServingRuntime,
)
from modelhost.control.objects.core import Container, PodSpec
from modelhost.settings import add_server_arguments

__all__ = ["user_code"]

# Runtime flags a built-in runtime takes that choose data, not code. Left out on purpose:
# --model_class (imports a class), --option (any option, trust_remote_code among them).
_RUNTIME_FLAGS = frozenset(
    {
        *("--model_name", "--model-name", "--name", "--model_dir", "--model-dir"),
        *("--runtime", "--model_format", "--model-format", "--predict_proba"),
        *("--predict-proba", "--task", "--return_probabilities", "--max_length"),
        *("--max-length", "--device", "--nthread", "--dtype", "--backend"),
        *("--max_num_seqs", "--max-num-seqs", "--max_model_len", "--max-model-len"),
        *("--lora", "--lora_modules", "--lora-modules", "--model_id", "--model-id"),
        *("--predictor_host", "--predictor_protocol", "--protocol"),
        *("--predictor_use_ssl", "--predictor_request_timeout_seconds"),
        *("--no-distil", "--no_distil"),
    }
)
_CODE_ENV_PREFIXES = ("LD_", "PYTHON")


@functools.cache
def _server_flags() -> frozenset[str]:
    parser = argparse.ArgumentParser(add_help=False)
    add_server_arguments(parser)
    return frozenset(s for action in parser._actions for s in action.option_strings)


def user_code(obj: Any) -> list[str]:
    """The field paths of ``obj`` that run code of the user's choosing ([] if none)."""
    if isinstance(obj, (ServingRuntime, ClusterServingRuntime)):
        return ["spec.containers: a serving runtime runs the command it names"]
    if isinstance(obj, InferenceGraph):
        # Not code, but as strong: the router posts to any URL from inside the platform,
        # loopback addresses (replicas, the internal mesh) included.
        return [
            f"spec.nodes.{node}.steps[{index}].serviceUrl: the router calls a URL of the "
            "user's choosing"
            for node, router in sorted(obj.spec.nodes.items())
            for index, step in enumerate(router.steps or ())
            if step.service_url
        ]
    if not isinstance(obj, InferenceService):
        return []
    found: list[str] = []
    spec = obj.spec
    allowed = _server_flags() | _RUNTIME_FLAGS
    components: list[tuple[str, Any]] = [
        ("spec.predictor", spec.predictor),
        ("spec.transformer", spec.transformer),
        ("spec.explainer", spec.explainer),
    ]
    components += [
        (f"spec.canary[{i}].predictor", c.predictor) for i, c in enumerate(spec.canary or ())
    ]
    for path, component in components:
        if component is None:
            continue
        found += _pod(path, component, allowed)
        # The framework shorthands and ``model`` (a predictor), ``art`` (an explainer).
        for field in (*FRAMEWORKS, "model", "art"):
            found += _container(f"{path}.{field}", getattr(component, field, None), allowed)
    return found


def _pod(path: str, pod: PodSpec, allowed: frozenset[str]) -> list[str]:
    found: list[str] = []
    if pod.containers:
        found.append(f"{path}.containers: a custom container runs its own command")
    if pod.init_containers:
        found.append(f"{path}.initContainers: an init container runs its own command")
    return found


def _container(path: str, container: Container | None, allowed: frozenset[str]) -> list[str]:
    if container is None:
        return []
    found: list[str] = []
    if container.command:
        found.append(f"{path}.command: a custom command")
    for arg in container.args or ():
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and not flag[1:2].isdigit() and flag not in allowed:
            found.append(f"{path}.args: {flag} is not one of the server's data-only flags")
    for variable in container.env or ():
        if variable.name.upper().startswith(_CODE_ENV_PREFIXES):
            found.append(f"{path}.env: {variable.name} makes the process load other code")
    if container.env_from:
        found.append(f"{path}.envFrom: variables of unknown names")
    return found
