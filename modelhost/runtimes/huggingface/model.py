"""``HuggingFaceModel``: a transformers encoder loaded from its folder and run on texts.

A ``text_embedding`` folder is built as ``HuggingFaceEmbeddingModel``, which the OpenAI
API's ``/v1/embeddings`` calls too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from modelhost import errors
from modelhost.model.generation import EmbeddingModel
from modelhost.model.model import Model
from modelhost.runtimes._common import import_framework, truthy
from modelhost.runtimes.huggingface import folder, results
from modelhost.runtimes.huggingface.folder import (
    FILL_MASK,
    SEQUENCE_CLASSIFICATION,
    TEXT_EMBEDDING,
    TOKEN_CLASSIFICATION,
    Pooling,
)

__all__ = ["HuggingFaceEmbeddingModel", "HuggingFaceModel"]

logger = logging.getLogger("modelhost.runtimes.huggingface")

_AUTO_CLASSES = {
    SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
    TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
    FILL_MASK: "AutoModelForMaskedLM",
    TEXT_EMBEDDING: "AutoModel",
}
_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
}
# Tokenizers without a recorded limit report this sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 10**9
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


@dataclass(frozen=True)
class _Loaded:
    """What ``load`` built; ``predict`` takes it in one read, so ``unload`` cannot tear it."""

    task: str
    torch: Any
    model: Any
    tokenizer: Any
    device: Any
    max_length: int | None
    pooling: Pooling | None
    num_labels: int
    embedding_size: int


class HuggingFaceModel(Model):
    """A Hugging Face model folder (``config.json``, weights, tokenizer) served for one task.

    Options are KServe's Hugging Face server flags: ``task``, ``return_probabilities``,
    ``return_raw_logits``, ``max_length`` (or ``max_model_len``), ``dtype`` (auto, float32,
    float16, bfloat16, float, half; auto is float16 on CUDA and float32 on CPU),
    ``disable_lower_case``, ``disable_special_tokens``, ``trust_remote_code``; and ours:
    ``device`` (cpu, cuda, cuda:N or auto; cpu by default) and ``nthread`` (torch's intra-op
    threads, per process; 1 by default, as the server runs requests in parallel threads).
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        task: str | None = None,
        return_probabilities: bool = False,
        return_raw_logits: bool = False,
        max_length: int | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        nthread: int = 1,
        disable_lower_case: bool = False,
        disable_special_tokens: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(name)
        if return_probabilities and return_raw_logits:
            raise errors.ModelLoadError(
                "return_probabilities and return_raw_logits exclude each other: pick one."
            )
        if max_length is not None and max_length < 1:
            raise errors.ModelLoadError(f"max_length must be positive, not {max_length}.")
        if dtype.strip().lower() not in ("auto", *_DTYPES):
            raise errors.ModelLoadError(
                f"Unknown dtype {dtype!r}: expected auto, {', '.join(_DTYPES)}."
            )
        self.model_dir = Path(model_dir)
        self.task = task
        self.scores = (
            results.PROBABILITIES
            if return_probabilities
            else results.RAW_LOGITS
            if return_raw_logits
            else results.LABEL_IDS
        )
        self.max_length = max_length
        self.device = device
        self.dtype = dtype.strip().lower()
        self.nthread = nthread
        self.disable_lower_case = disable_lower_case
        self.add_special_tokens = not disable_special_tokens
        self.trust_remote_code = trust_remote_code
        self._loaded: _Loaded | None = None
        # A fast tokenizer called from two threads at once can fail with "Already borrowed"
        # (transformers#47085): the server's threads take turns.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_options(cls, name: str, path: Path, options: Mapping[str, Any]) -> HuggingFaceModel:
        """The model built from runtime options, strings included (``--option max_length=64``)."""
        max_length = options.get("max_length", options.get("max_model_len"))
        task = str(options["task"]) if options.get("task") else None
        if cls is HuggingFaceModel and _embeds(path, task):
            cls = HuggingFaceEmbeddingModel
        return cls(
            name,
            path,
            task=task,
            return_probabilities=truthy(options.get("return_probabilities")),
            return_raw_logits=truthy(options.get("return_raw_logits")),
            max_length=_integer("max_length", max_length),
            device=str(options.get("device") or "cpu"),
            dtype=str(options.get("dtype") or "auto"),
            nthread=_integer("nthread", options.get("nthread")) or 1,
            disable_lower_case=truthy(options.get("disable_lower_case")),
            disable_special_tokens=truthy(options.get("disable_special_tokens")),
            trust_remote_code=truthy(options.get("trust_remote_code")),
        )

    # -- loading ------------------------------------------------------------------------------

    def load(self) -> bool:
        model_dir = self.model_dir
        if not model_dir.is_dir():
            raise errors.ModelLoadError(
                f"{model_dir} is not a folder: a Hugging Face model is a folder holding "
                "config.json, the weights and the tokenizer files."
            )
        config = folder.read_json(model_dir / folder.CONFIG_FILE)
        if not isinstance(config, dict):
            raise errors.ModelLoadError(f"{model_dir / folder.CONFIG_FILE} is not a JSON object.")
        task = folder.resolve_task(self.task, model_dir, config)
        if task == TEXT_EMBEDDING and config.get("is_encoder_decoder"):
            raise errors.ModelLoadError(
                f"{model_dir} holds an encoder-decoder model; text_embedding needs an encoder."
            )
        if task in (FILL_MASK, TEXT_EMBEDDING) and self.scores != results.LABEL_IDS:
            logger.warning(
                "Model %s: %s applies to classification only; this %s model ignores it.",
                self.name,
                f"return_{self.scores}",
                task,
            )
        pooling = (
            folder.sentence_transformers_pooling(model_dir) if task == TEXT_EMBEDDING else None
        )
        torch = import_framework("torch", "huggingface")
        transformers = import_framework("transformers", "huggingface")
        device = _device(torch, self.device)
        dtype = getattr(torch, _DTYPES.get(self.dtype, _default_dtype(device)))
        torch.set_num_threads(self.nthread)
        tokenizer = self._load_tokenizer(transformers, task)
        max_length = self._token_limit(config, tokenizer)
        model = self._load_weights(transformers, task, device, dtype)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        hidden_size = int(getattr(model.config, "hidden_size", 0) or 0)
        self._loaded = _Loaded(
            task=task,
            torch=torch,
            model=model,
            tokenizer=tokenizer,
            device=device,
            max_length=max_length,
            pooling=pooling,
            num_labels=int(getattr(model.config, "num_labels", 0) or 0),
            embedding_size=hidden_size * len(pooling.modes) if pooling else 0,
        )
        self.ready = True
        return self.ready

    def _load_tokenizer(self, transformers: Any, task: str) -> Any:
        options: dict[str, Any] = {"local_files_only": True}
        if self.trust_remote_code:
            options["trust_remote_code"] = True
        if self.disable_lower_case:
            options["do_lower_case"] = False
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir), **options)
        except Exception as exc:
            raise errors.ModelLoadError(
                f"Cannot load the tokenizer from {self.model_dir} (tokenizer.json, vocab.txt, "
                f"...): {type(exc).__name__}: {exc}"
            ) from exc
        if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
            # transformers builds an empty tokenizer from config.json when no files hold one.
            raise errors.ModelLoadError(
                f"{self.model_dir} holds no tokenizer vocabulary (tokenizer.json, vocab.txt, "
                "...): save the tokenizer with the model (tokenizer.save_pretrained)."
            )
        if tokenizer.pad_token is None:
            # Batches are padded; decoder-style tokenizers often name no padding token.
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is None:
                raise errors.ModelLoadError(
                    f"The tokenizer in {self.model_dir} has no padding token to batch texts with."
                )
            tokenizer.pad_token = fallback
        if task == FILL_MASK and tokenizer.mask_token_id is None:
            raise errors.ModelLoadError(
                f"The tokenizer in {self.model_dir} has no mask token: fill_mask needs one."
            )
        return tokenizer

    def _load_weights(self, transformers: Any, task: str, device: Any, dtype: Any) -> Any:
        auto_class = getattr(transformers, _AUTO_CLASSES[task])
        options: dict[str, Any] = {"local_files_only": True}
        if self.trust_remote_code:
            options["trust_remote_code"] = True
        try:
            model = auto_class.from_pretrained(str(self.model_dir), **options)
            # After loading, not a from_pretrained argument: its name changed in transformers 5.
            return model.to(device=device, dtype=dtype).eval()
        except Exception as exc:
            raise errors.ModelLoadError(
                f"Cannot load the {task} model in {self.model_dir}: {type(exc).__name__}: {exc}"
            ) from exc

    def _token_limit(self, config: dict[str, Any], tokenizer: Any) -> int | None:
        """The longest input in tokens: ``max_length`` if asked for, else the model's own."""
        limits = [int(config[key]) for key in _POSITION_KEYS if isinstance(config.get(key), int)]
        recorded = getattr(tokenizer, "model_max_length", None)
        if isinstance(recorded, int) and 0 < recorded < _NO_LIMIT:
            limits.append(recorded)
        limit = min(limits) if limits else None
        if self.max_length is not None:
            if limit is not None and self.max_length > limit:
                raise errors.ModelLoadError(
                    f"max_length {self.max_length} is longer than model {self.name} takes "
                    f"({limit} tokens)."
                )
            return self.max_length
        trained = folder.sentence_transformers_max_length(self.model_dir)
        if trained is not None and (limit is None or trained < limit):
            return trained
        return limit

    def unload(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None and loaded.device.type == "cuda":
            loaded.torch.cuda.empty_cache()
        super().unload()

    # -- inference ----------------------------------------------------------------------------

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        loaded = self._loaded
        if loaded is None:
            raise errors.ModelNotReady(self.name)
        texts = results.request_texts(payload)
        tokenizer, torch = loaded.tokenizer, loaded.torch
        with self._tokenizer_lock:
            encoded = tokenizer(
                texts,
                padding=True,
                truncation=loaded.max_length is not None,
                max_length=loaded.max_length,
                add_special_tokens=self.add_special_tokens,
                return_tensors="pt",
            )
        if loaded.task == FILL_MASK:
            results.check_masks(encoded["input_ids"], tokenizer.mask_token_id, tokenizer.mask_token)
        try:
            with torch.inference_mode():
                outputs = loaded.model(**encoded.to(loaded.device))
                result = self._result(loaded, outputs, encoded)
        except errors.ModelhostError:
            raise
        except Exception as exc:
            out_of_memory = isinstance(exc, getattr(torch, "OutOfMemoryError", ()))
            kind = "ran out of memory" if out_of_memory else "failed"
            raise errors.InferenceError(
                f"Model {self.name} {kind}: {type(exc).__name__}: {exc}"
            ) from exc
        per_class = loaded.task in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION)
        return results.reply(
            payload, result, self.name, per_class and self.scores != results.LABEL_IDS
        )

    def _result(self, loaded: _Loaded, outputs: Any, encoded: Any) -> npt.NDArray[Any]:
        torch, task = loaded.torch, loaded.task
        if task == TEXT_EMBEDDING:
            assert loaded.pooling is not None
            return results.pool(
                outputs.last_hidden_state, encoded["attention_mask"], loaded.pooling, torch
            )
        if task == FILL_MASK:
            tokenizer = loaded.tokenizer
            with self._tokenizer_lock:
                return results.fill_masks(
                    outputs.logits, encoded["input_ids"], tokenizer.mask_token_id, tokenizer.decode
                )
        scores = results.class_scores(outputs.logits, self.scores, torch)
        if task == TOKEN_CLASSIFICATION and self.scores == results.LABEL_IDS:
            return scores[:, None, :]  # KServe's shape: [texts, 1, tokens]
        return scores

    # -- metadata -----------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        if self._loaded is None:
            return []
        return [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        loaded = self._loaded
        if loaded is None:
            return []
        ids = self.scores == results.LABEL_IDS
        labels = loaded.num_labels
        shapes: dict[str, tuple[str, list[int]]] = {
            SEQUENCE_CLASSIFICATION: ("INT64", [-1]) if ids else ("FP32", [-1, labels]),
            TOKEN_CLASSIFICATION: ("INT64", [-1, 1, -1]) if ids else ("FP32", [-1, -1, labels]),
            FILL_MASK: ("BYTES", [-1]),
            TEXT_EMBEDDING: ("FP32", [-1, loaded.embedding_size]),
        }
        datatype, shape = shapes[loaded.task]
        return [{"name": results.OUTPUT_NAME, "datatype": datatype, "shape": shape}]

    @property
    def platform(self) -> str:
        return "huggingface"


class HuggingFaceEmbeddingModel(HuggingFaceModel, EmbeddingModel):
    """A ``text_embedding`` model, served to ``/v1/embeddings`` as well as to ``predict``."""

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """The texts' embeddings (pooled and normalized as for ``predict``), and the tokens
        they took, special tokens included; runs in a thread."""
        if not isinstance(texts, list) or not texts:
            raise errors.InvalidInput("input must be a non-empty list of strings.")
        if not all(isinstance(text, str) for text in texts):
            raise errors.InvalidInput("input must hold strings only.")
        return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        loaded = self._loaded
        if loaded is None:
            raise errors.ModelNotReady(self.name)
        if loaded.task != TEXT_EMBEDDING or loaded.pooling is None:
            raise errors.Unsupported(f"Model {self.name} serves {loaded.task}, not embeddings.")
        torch = loaded.torch
        with self._tokenizer_lock:
            encoded = loaded.tokenizer(
                texts,
                padding=True,
                truncation=loaded.max_length is not None,
                max_length=loaded.max_length,
                add_special_tokens=self.add_special_tokens,
                return_tensors="pt",
            )
        try:
            with torch.inference_mode():
                outputs = loaded.model(**encoded.to(loaded.device))
                vectors = results.pool(
                    outputs.last_hidden_state, encoded["attention_mask"], loaded.pooling, torch
                )
        except Exception as exc:
            raise errors.InferenceError(
                f"Model {self.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        embeddings: list[list[float]] = vectors.tolist()
        return embeddings, int(encoded["attention_mask"].sum())


def _embeds(path: Path, task: str | None) -> bool:
    """Whether the folder serves ``text_embedding``; a folder that cannot tell fails at load."""
    if not path.is_dir():
        return False
    try:
        config = folder.read_json(path / folder.CONFIG_FILE)
        if not isinstance(config, dict):
            return False
        return folder.resolve_task(task, path, config) == TEXT_EMBEDDING
    except errors.ModelhostError:
        return False


def _integer(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise errors.ModelLoadError(f"Option {name} takes an integer, not {value!r}.") from None


def _default_dtype(device: Any) -> str:
    # KServe's "auto": half precision on a GPU, full precision on a CPU.
    return "float16" if device.type == "cuda" else "float32"


def _device(torch: Any, wanted: str) -> Any:
    name = wanted.strip().lower() or "cpu"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise errors.ModelLoadError(f"Unknown device {wanted!r}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise errors.ModelLoadError(
                f"Device {wanted!r} was asked for, but torch {torch.__version__} sees {count} "
                "CUDA device(s) here; use device 'cpu' or 'auto'."
            )
    return device
