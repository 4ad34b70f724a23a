"""``Engine``: a ``transformers`` causal LM served to asyncio code with continuous batching.

The layer below the OpenAI API: it turns prompt token ids and ``SamplingParams`` into an
async stream of ``TokenEvent``. The model runs on one worker thread (``scheduler``), which
keeps a running batch that requests join and leave between decode steps (``ragged`` has the
per-step design, ``batch`` the padded fallback for models it does not fit); the event loop
only queues requests and reads their events.
LoRA adapters (``lora``) run in the same batch as the base model, each row with its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from collections.abc import Sequence as Tokens
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from modelhost import errors
from modelhost.model.generation import EngineOverloaded, SamplingParams, TokenEvent
from modelhost.runtimes._common import import_framework
from modelhost.runtimes.llm.lora import Adapters
from modelhost.runtimes.llm.sequence import Sequence
from modelhost.runtimes.llm.tokenizer import Tokenizer, load_tokenizer

if TYPE_CHECKING:
    from modelhost.runtimes.llm.scheduler import Scheduler

__all__ = ["Engine", "EngineOverloaded"]

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
# Tokenizers without a recorded limit report transformers' VERY_LARGE_INTEGER.
_NO_LIMIT = 10**9
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


class Engine:
    """A causal LM and its tokenizer, loaded from a Hugging Face folder, generating in batches.

    ``max_batch_size`` sequences decode together; up to ``max_queue`` more wait, and past
    that ``generate`` raises ``EngineOverloaded`` (429). ``max_prefill_tokens`` bounds one
    prefill forward (joining prompts times the longest of them). ``loras`` maps adapter
    names to LoRA adapter folders loaded with the model. Loading blocks: build the engine
    off the event loop (``asyncio.to_thread``), then ``await start()`` (or ``launch()``).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        device: str = "cpu",
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_prefill_tokens: int = 4096,
        threads: int | None = None,
        trust_remote_code: bool = False,
        loras: Mapping[str, str | Path] | None = None,
    ) -> None:
        for name, value in (
            ("max_batch_size", max_batch_size),
            ("max_prefill_tokens", max_prefill_tokens),
        ):
            if value < 1:
                raise errors.ModelLoadError(f"{name} must be at least 1, not {value}.")
        if max_queue < 0:
            raise errors.ModelLoadError(f"max_queue must be at least 0, not {max_queue}.")
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise errors.ModelLoadError(
                f"{self.model_dir} is not a folder holding a Hugging Face causal LM."
            )
        torch = import_framework("torch", "huggingface")
        transformers = import_framework("transformers", "huggingface")
        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        self._device = _device(torch, device)
        options: dict[str, Any] = {"local_files_only": True}
        if trust_remote_code:
            options["trust_remote_code"] = True
        self.tokenizer = load_tokenizer(self.model_dir, trust_remote_code=trust_remote_code)
        self._text = Tokenizer(self.tokenizer, self.model_dir)
        model = _load(transformers.AutoModelForCausalLM, self.model_dir, options, "model")
        name = dtype.strip().lower()
        if name != "auto" and name not in _DTYPES:
            raise errors.ModelLoadError(f"Unknown dtype {dtype!r}: expected auto, float32, ...")
        default = "float16" if self._device.type == "cuda" else "float32"
        self.model = model.to(device=self._device, dtype=getattr(torch, _DTYPES.get(name, default)))
        self.model.eval()
        self.max_model_len = self._context_length(max_model_len)
        self.eos_ids = self._eos_ids()
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = min(self.eos_ids) if self.eos_ids else 0
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._adapters = Adapters(self.model, self.model_dir)
        for adapter, path in (loras or {}).items():
            # Before the worker exists: nothing else runs the model yet.
            self._adapters.load(_adapter_name(adapter), path)
        from modelhost.runtimes.llm.scheduler import Scheduler

        self._scheduler: Scheduler = Scheduler(
            self.model,
            device=self._device,
            pad_id=int(pad_id),
            vocab_size=self.vocab_size,
            token_text=self._token_text,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            max_prefill_tokens=max_prefill_tokens,
            max_model_len=self.max_model_len,
            adapters=self._adapters,
        )
        try:
            self._scheduler.probe(int(pad_id))
        except errors.Unsupported as exc:
            raise errors.ModelLoadError(str(exc)) from exc
        self._active: dict[str, Sequence] = {}

    def _context_length(self, wanted: int | None) -> int:
        config = self.model.config.get_text_config()
        limits = [
            int(getattr(config, key))
            for key in _POSITION_KEYS
            if isinstance(getattr(config, key, None), int)
        ]
        recorded = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(recorded, int) and 0 < recorded < _NO_LIMIT:
            limits.append(recorded)
        limit = min(limits) if limits else None
        if wanted is None:
            if limit is None:
                raise errors.ModelLoadError(
                    f"{self.model_dir} records no context length: pass max_model_len."
                )
            return limit
        if wanted < 1 or (limit is not None and wanted > limit):
            raise errors.ModelLoadError(
                f"max_model_len must be between 1 and the model's {limit}, not {wanted}."
            )
        return wanted

    def _eos_ids(self) -> frozenset[int]:
        found: set[int] = set()
        generation = getattr(self.model, "generation_config", None)
        for value in (getattr(generation, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                found.add(value)
            elif isinstance(value, (list, tuple)):
                found.update(int(v) for v in value)
        return frozenset(found)

    @property
    def batching(self) -> str:
        """``ragged`` when prompts start inside the decode step, ``padded`` on the fallback."""
        return "ragged" if self._scheduler.fused else "padded"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._scheduler.start()

    def launch(self) -> None:
        """Start the worker thread if it is not running (safe from any thread, and cheap)."""
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop the worker after its current step; unfinished requests get ``ServerNotReady``."""
        await asyncio.to_thread(self._scheduler.stop)

    def shutdown(self, *, wait: bool = True) -> None:
        """:meth:`stop` for synchronous callers; ``wait=False`` returns without blocking."""
        self._scheduler.stop(wait=wait)

    # -- LoRA adapters ------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        return self._adapters.names

    def adapter_path(self, name: str) -> str | None:
        return self._adapters.path(name)

    async def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a LoRA adapter while the engine runs; between two decode steps, on its worker.

        The running batch pauses while the adapter's weights are read (small files: well
        under a second for a rank-16 adapter of a 7B model on local disk).
        """
        name = _adapter_name(name)
        if name in self._adapters:
            raise errors.InvalidInput(f"The LoRA adapter {name!r} is already loaded.")
        await asyncio.wrap_future(self._scheduler.call(lambda: self._adapters.load(name, path)))

    async def unload_adapter(self, name: str) -> None:
        """Stop serving an adapter; its waiting and running requests fail with ``ModelNotFound``."""
        if name not in self._adapters:
            raise errors.ModelNotFound(name)

        def unload() -> None:
            self._scheduler.fail_where(
                lambda sequence: sequence.adapter == name, errors.ModelNotFound(name)
            )
            self._adapters.unload(name)

        await asyncio.wrap_future(self._scheduler.call(unload))

    # -- text ---------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        """The prompt's token ids; a chat-templated prompt already has its special tokens."""
        return self._text.encode(prompt, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: Tokens[int]) -> str:
        """The text of ``token_ids``, special tokens left out (for ``echo``)."""
        return self._text.decode(token_ids)

    def _token_text(self, token_id: int) -> str:
        return self._text.token_text(token_id)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """The prompt the model's chat template makes of ``messages``, ready for a reply."""
        return self._text.apply_chat_template(messages)

    # -- generation ---------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str,
        adapter: str | None = None,
    ) -> AsyncGenerator[TokenEvent, None]:
        """Stream the request's tokens; leaving the loop or cancelling frees its slot.

        ``adapter`` names a loaded LoRA adapter (``None``: the base model). Raises
        ``InvalidInput`` for a bad prompt, ``ModelNotFound`` for an adapter not loaded,
        ``EngineOverloaded`` when the queue is full and ``ServerNotReady`` when the engine is
        not running, on the first iteration.
        """
        if not isinstance(params, SamplingParams):
            raise errors.InvalidInput("params must be SamplingParams.")
        self._check_prompt(prompt_ids, params)
        if adapter is not None and adapter not in self._adapters:
            raise errors.ModelNotFound(adapter)
        if request_id in self._active:
            raise errors.InvalidInput(f"Request {request_id!r} is already running.")
        sequence = Sequence(
            request_id,
            prompt_ids,
            params,
            loop=asyncio.get_running_loop(),
            decode=self.decode,
            eos_ids=self.eos_ids,
            adapter=adapter,
        )
        self._scheduler.submit(sequence)
        self._active[request_id] = sequence
        try:
            while True:
                item = await sequence.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._active.pop(request_id, None)
            if sequence.finish_reason is None:
                self._scheduler.cancel(sequence)

    def abort(self, request_id: str) -> bool:
        """Cancel a running or waiting request by id; its stream raises ``InferenceError``."""
        sequence = self._active.get(request_id)
        if sequence is None:
            return False
        self._scheduler.cancel(sequence)
        sequence.queue.put_nowait(errors.InferenceError(f"Request {request_id} was aborted."))
        return True

    def _check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not isinstance(prompt_ids, list) or not prompt_ids:
            raise errors.InvalidInput("The prompt must be a non-empty list of token ids.")
        if not all(isinstance(i, int) and 0 <= i < self.vocab_size for i in prompt_ids):
            raise errors.InvalidInput(
                f"The prompt's token ids must be integers in [0, {self.vocab_size})."
            )
        total = len(prompt_ids) + params.max_tokens
        if total > self.max_model_len:
            raise errors.InvalidInput(
                f"This model's maximum context length is {self.max_model_len} tokens; the "
                f"request asks for {total} ({len(prompt_ids)} in the prompt, max_tokens "
                f"{params.max_tokens}). Shorten the prompt or lower max_tokens."
            )

    # -- observability ------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """Gauges and counters for metrics; ``kv_cache_usage`` is the KV cache's share of
        ``max_batch_size`` full-length sequences."""
        scheduler = self._scheduler
        return {
            "running": scheduler.running,
            "waiting": scheduler.waiting,
            "kv_cache_usage": scheduler.kv_cache_usage,
            "prompt_tokens_total": scheduler.prompt_tokens_total,
            "generation_tokens_total": scheduler.generation_tokens_total,
        }

    # -- embeddings ---------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Mean-pooled last hidden states, ``[texts, hidden]``; blocks, so run it in a thread.

        A causal LM's pooled states are a weak embedding; a sentence-transformers model
        served by the Hugging Face runtime is the better choice where quality matters.
        """
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise errors.InvalidInput("texts must be a list of strings.")
        if not texts:
            return np.zeros((0, int(self.model.config.get_text_config().hidden_size)), np.float32)
        torch = self._torch
        encoded = self._text.batch(texts, max_length=self.max_model_len).to(self._device)
        inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        model, options = self._adapters.route([None] * len(texts))
        with torch.inference_mode():
            if options:
                # Adapters are loaded: through peft, which keeps them out of base rows.
                output = model(**inputs, use_cache=False, output_hidden_states=True, **options)
                hidden = output.hidden_states[-1]
            else:
                hidden = self.model.base_model(**inputs, use_cache=False).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return np.asarray(pooled.float().cpu().numpy(), dtype=np.float32)


def _load(auto_class: Any, folder: Path, options: dict[str, Any], what: str) -> Any:
    try:
        return auto_class.from_pretrained(str(folder), **options)
    except Exception as exc:
        raise errors.ModelLoadError(
            f"Cannot load the {what} in {folder}: {type(exc).__name__}: {exc}"
        ) from exc


def _adapter_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise errors.InvalidInput(f"A LoRA adapter needs a non-empty name, not {name!r}.")
    return name


def _device(torch: Any, wanted: str) -> Any:
    name = wanted.strip().lower() or "cpu"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise errors.ModelLoadError(f"Unknown device {wanted!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise errors.ModelLoadError(f"Device {wanted!r} was asked for, but no GPU is visible.")
    return device
