"""The ``llm`` runtime: which folders it serves, its options, and which backend serves them.

A Hugging Face folder (``config.json`` and weights) whose architecture is a causal LM
(``*ForCausalLM``, GPT-2's ``*LMHeadModel``) is this runtime's; it outranks the Hugging Face
runtime's predictive tasks. Options (KServe's and vLLM's flag names):

- ``backend``: ``auto`` (vLLM when it is installed and a GPU is visible, else
  ``transformers``), ``transformers`` (``huggingface``, KServe's name, too) or ``vllm``.
- ``max_num_seqs``: requests decoding together (16); ``max_queue``: requests waiting (64).
- ``max_model_len`` (or ``max_length``): the context length (the model's own).
- ``lora``: ``NAME=PATH`` adapters, a list or one comma-separated string (``lora_modules``
  is vLLM's name for it).
- ``dtype``, ``device``, ``nthread``, ``trust_remote_code``, ``max_prefill_tokens``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.generation import GenerativeModel
from modelhost.runtimes._common import truthy
from modelhost.runtimes.huggingface.folder import CONFIG_FILE
from modelhost.runtimes.huggingface.folder import claim as hf_claim

__all__ = [
    "BACKENDS",
    "build_llm_model",
    "claim",
    "is_causal_lm",
    "lora_modules",
    "select_backend",
    "vllm_installed",
    "vllm_usable",
]

BACKENDS = ("auto", "transformers", "vllm")
_BACKEND_ALIASES = {"huggingface": "transformers", "hf": "transformers"}
# Architecture-name endings of decoder-only LMs: transformers' causal LM heads, and
# GPT-2's older name for its own.
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_GENERATIVE_TASKS = ("text_generation", "text-generation")


def claim(files: list[Path]) -> list[str]:
    """The files that make a folder a causal LM's: a Hugging Face folder that says so."""
    names = hf_claim(files)
    if not names:
        return []
    config = next((f for f in files if f.name == CONFIG_FILE), None)
    if config is None or not is_causal_lm(config.parent):
        return []
    return names


def is_causal_lm(model_dir: Path) -> bool:
    """Whether ``config.json`` names a causal LM architecture; an unreadable one does not."""
    try:
        config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not architectures:
        return False
    return str(architectures[0]).endswith(_CAUSAL_SUFFIXES)


def is_generation_task(task: object) -> bool:
    return isinstance(task, str) and task.strip().lower() in _GENERATIVE_TASKS


def vllm_installed() -> bool:
    """Whether vLLM can be imported, without importing it (that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def vllm_usable() -> bool:
    """vLLM is installed and torch sees a GPU: ``auto`` picks vLLM."""
    if not vllm_installed():
        return False
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def select_backend(requested: object) -> str:
    """``transformers`` or ``vllm`` for the ``backend`` option (``auto`` when absent)."""
    name = str(requested or "auto").strip().lower()
    name = _BACKEND_ALIASES.get(name, name)
    if name not in BACKENDS:
        raise errors.ModelLoadError(
            f"Unknown LLM backend {requested!r}: expected one of {', '.join(BACKENDS)}."
        )
    if name == "auto":
        return "vllm" if vllm_usable() else "transformers"
    if name == "vllm" and not vllm_installed():
        raise errors.ModelLoadError(
            "The vllm backend needs vLLM, which is not installed here: pip install vllm "
            "(on a machine with a GPU), or use --backend transformers."
        )
    return name


def lora_modules(value: object) -> dict[str, str]:
    """``NAME=PATH`` adapters from a list of them or a comma-separated string."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        items = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
    else:
        raise errors.ModelLoadError(f"lora takes NAME=PATH items, not {value!r}.")
    adapters: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise errors.ModelLoadError(f"lora takes NAME=PATH, not {item!r}.")
        if name in adapters:
            raise errors.ModelLoadError(f"The LoRA adapter {name!r} is given twice.")
        adapters[name] = path
    return adapters


def build_llm_model(
    name: str, path: Path, options: Mapping[str, Any], *, backend: str | None = None
) -> GenerativeModel:
    """The (unloaded) model for a causal LM folder, on the backend the options choose."""
    task = options.get("task")
    if task and not is_generation_task(task):
        raise errors.ModelLoadError(
            f"The llm runtime generates text (task text_generation), not task {task!r}."
        )
    chosen = select_backend(backend or options.get("backend"))
    settings: dict[str, Any] = {
        "max_num_seqs": _integer(options, "max_num_seqs") or 16,
        "max_model_len": _integer(options, "max_model_len", "max_length"),
        "dtype": str(options.get("dtype") or "auto"),
        "loras": lora_modules(options.get("lora", options.get("lora_modules"))),
        "trust_remote_code": truthy(options.get("trust_remote_code")),
    }
    if chosen == "vllm":
        from modelhost.runtimes.llm.vllm_backend import VLLMModel

        return VLLMModel(name, path, **settings)
    from modelhost.runtimes.llm.model import LLMModel

    queue = _integer(options, "max_queue")
    return LLMModel(
        name,
        path,
        max_queue=64 if queue is None else queue,
        max_prefill_tokens=_integer(options, "max_prefill_tokens") or 4096,
        device=str(options.get("device") or "cpu"),
        nthread=_integer(options, "nthread"),
        **settings,
    )


def _integer(options: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = options.get(key)
        if value is None or value == "":
            continue
        try:
            return int(value)
        except (TypeError, ValueError):
            raise errors.ModelLoadError(f"Option {key} takes an integer, not {value!r}.") from None
    return None
