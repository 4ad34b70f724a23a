"""What a Hugging Face model folder says about itself, read from its JSON files without torch.

Detection (``claim``), the task a folder's ``config.json`` implies, and the
sentence-transformers settings (pooling, normalization, sequence length) that decide how
token embeddings become one embedding per text.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost import errors

__all__ = [
    "CONFIG_FILE",
    "FILL_MASK",
    "GENERATIVE_TASKS",
    "SEQUENCE_CLASSIFICATION",
    "TASKS",
    "TEXT_EMBEDDING",
    "TOKEN_CLASSIFICATION",
    "WEIGHT_PATTERNS",
    "Pooling",
    "claim",
    "infer_task",
    "read_json",
    "resolve_task",
    "sentence_transformers_max_length",
    "sentence_transformers_pooling",
]

CONFIG_FILE = "config.json"
# PyTorch weights as save_pretrained writes them: one file, or shards and their index.
WEIGHT_PATTERNS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model-*-of-*.bin",
)

SEQUENCE_CLASSIFICATION = "sequence_classification"
TOKEN_CLASSIFICATION = "token_classification"
FILL_MASK = "fill_mask"
TEXT_EMBEDDING = "text_embedding"
TASKS = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, FILL_MASK, TEXT_EMBEDDING)
GENERATIVE_TASKS = ("text_generation", "text2text_generation")
_OTHER_TASKS = ("question_answering", "table_question_answering", "multiple_choice")

# The names Hugging Face pipelines give the same tasks.
_TASK_ALIASES = {
    "text_classification": SEQUENCE_CLASSIFICATION,
    "sentiment_analysis": SEQUENCE_CLASSIFICATION,
    "ner": TOKEN_CLASSIFICATION,
    "feature_extraction": TEXT_EMBEDDING,
    "sentence_similarity": TEXT_EMBEDDING,
    "embedding": TEXT_EMBEDDING,
}

# Architecture-name suffixes, checked in order: KServe's table, then GPT-2's "LMHeadModel"
# before the bare "Model" of encoders.
_ARCHITECTURE_TASKS = (
    ("TapasForQuestionAnswering", "table_question_answering"),
    ("ForQuestionAnswering", "question_answering"),
    ("ForTokenClassification", TOKEN_CLASSIFICATION),
    ("ForSequenceClassification", SEQUENCE_CLASSIFICATION),
    ("ForMultipleChoice", "multiple_choice"),
    ("ForMaskedLM", FILL_MASK),
    ("ForCausalLM", "text_generation"),
    ("ForConditionalGeneration", "text2text_generation"),
    ("MTModel", "text2text_generation"),
    ("EncoderDecoderModel", "text2text_generation"),
    ("LMHeadModel", "text_generation"),
    ("Model", TEXT_EMBEDDING),
)

_MODULES_FILE = "modules.json"
_SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
_POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "lasttoken")
# sentence-transformers before v5 wrote one boolean per mode.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def claim(files: list[Path]) -> list[str]:
    """The files that make a folder a Hugging Face model: ``config.json`` and weights."""
    names = [path.name for path in files]
    weights = [name for name in names if _is_weights(name)]
    if CONFIG_FILE not in names or not weights:
        return []
    return [CONFIG_FILE, *weights]


def _is_weights(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in WEIGHT_PATTERNS)


def read_json(path: Path) -> Any:
    """A JSON file of the model folder; a missing or broken one is a load error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.ModelLoadError(f"{path} is missing.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.ModelLoadError(f"Cannot read {path}: {exc}") from None


def resolve_task(requested: str | None, model_dir: Path, config: dict[str, Any]) -> str:
    """The task to serve: ``requested`` (KServe's or a pipeline's name), else inferred."""
    if not requested:
        return infer_task(model_dir, config)
    key = requested.strip().lower().replace("-", "_")
    task = _TASK_ALIASES.get(key, key)
    _check_supported(task, f"Task {requested!r}")
    return task


def infer_task(model_dir: Path, config: dict[str, Any]) -> str:
    """The task ``config.json``'s ``architectures`` imply (a sentence-transformers folder:
    ``text_embedding``)."""
    if (model_dir / _MODULES_FILE).is_file():
        return TEXT_EMBEDDING
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not architectures:
        raise errors.ModelLoadError(
            f"{model_dir / CONFIG_FILE} names no architectures to infer the task from; "
            f"pass --task ({', '.join(TASKS)})."
        )
    architecture = str(architectures[0])
    for suffix, task in _ARCHITECTURE_TASKS:
        if architecture.endswith(suffix):
            _check_supported(task, f"Architecture {architecture} (task {task})")
            return task
    raise errors.ModelLoadError(
        f"Cannot infer the task from architecture {architecture}; pass --task ({', '.join(TASKS)})."
    )


def _check_supported(task: str, what: str) -> None:
    if task in TASKS:
        return
    supported = ", ".join(TASKS)
    if task in GENERATIVE_TASKS:
        raise errors.ModelLoadError(
            f"{what} generates text; this runtime serves the predictive tasks only ({supported}); "
            "the llm runtime serves causal LMs."
        )
    if task in _OTHER_TASKS:
        raise errors.ModelLoadError(f"{what} is not supported; supported tasks: {supported}.")
    raise errors.ModelLoadError(f"{what} is unknown; supported tasks: {supported}.")


@dataclass(frozen=True)
class Pooling:
    """How token embeddings become one embedding per text.

    ``modes`` are concatenated in order (sentence-transformers' rule); without a
    sentence-transformers configuration it is a normalized mean, as KServe computes.
    """

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = True


def sentence_transformers_pooling(model_dir: Path) -> Pooling:
    """The pooling ``modules.json`` describes; the default when the folder has none."""
    modules_path = model_dir / _MODULES_FILE
    if not modules_path.is_file():
        return Pooling()
    modules = read_json(modules_path)
    if not isinstance(modules, list):
        raise errors.ModelLoadError(f"{modules_path} is not a list of modules.")
    modes: tuple[str, ...] = ()
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1] if isinstance(module, dict) else ""
        if kind == "Pooling":
            modes = _pooling_modes(model_dir / str(module.get("path", "")) / CONFIG_FILE)
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            raise errors.ModelLoadError(
                f"{modules_path} lists a {kind or 'nameless'} module; this runtime follows "
                "Transformer, Pooling and Normalize modules only. Serve the model with a "
                "custom model class."
            )
    if not modes:
        raise errors.ModelLoadError(f"{modules_path} lists no Pooling module.")
    return Pooling(modes, normalize)


def _pooling_modes(path: Path) -> tuple[str, ...]:
    config = read_json(path)
    if not isinstance(config, dict):
        raise errors.ModelLoadError(f"{path} is not a JSON object.")
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes: tuple[str, ...] = (mode,)
    elif isinstance(mode, list):
        modes = tuple(str(m) for m in mode)
    else:
        modes = tuple(name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key))
    unsupported = [m for m in modes if m not in _POOLING_MODES]
    if unsupported:
        raise errors.ModelLoadError(
            f"{path} asks for pooling {', '.join(unsupported)}; this runtime pools with "
            f"{', '.join(_POOLING_MODES)}."
        )
    return modes or ("mean",)


def sentence_transformers_max_length(model_dir: Path) -> int | None:
    """``max_seq_length`` of ``sentence_bert_config.json``: the length the model was
    trained on."""
    path = model_dir / _SENTENCE_BERT_CONFIG
    if not path.is_file():
        return None
    config = read_json(path)
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None
