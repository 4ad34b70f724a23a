"""``VLLMModel``: the same ``GenerativeModel`` served by vLLM's ``AsyncLLMEngine`` on a GPU.

UNTESTED HERE: vLLM needs a GPU and could not be installed where this was written. It is
written against vLLM's documented API (``AsyncEngineArgs``, ``AsyncLLMEngine
.from_engine_args``, ``generate(prompt, sampling_params, request_id, lora_request=)``
yielding cumulative ``RequestOutput``, ``abort``, ``add_lora``/``remove_lora``,
``LoRARequest(name, int_id, path)``) and kept small; only the backend selection around it
is tested. vLLM is imported inside functions only, so this module imports without it.

Prompts and texts go through our own copy of the tokenizer (``tokenizer.Tokenizer``), so the
API layer's ``encode``, ``decode`` and chat templates behave as on the ``transformers``
backend; vLLM gets token ids.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.generation import GenerativeModel, SamplingParams, TokenEvent
from modelhost.runtimes.llm.tokenizer import Tokenizer, load_tokenizer

__all__ = ["VLLMModel"]

# vLLM's rank limit for adapters unless told otherwise; 64 covers common adapters.
_MAX_LORA_RANK = 64


class VLLMModel(GenerativeModel):
    """A causal LM folder served by vLLM; options as :class:`~.model.LLMModel`'s."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        *,
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        dtype: str = "auto",
        loras: Mapping[str, str] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.max_num_seqs = max_num_seqs
        self.requested_max_model_len = max_model_len
        self.dtype = dtype
        self.loras = dict(loras or {})
        self.trust_remote_code = trust_remote_code
        self._engine: Any = None
        self._text: Tokenizer | None = None
        self._max_model_len = 0
        self._eos_ids: frozenset[int] = frozenset()
        # vLLM knows adapters by LoRARequest; each needs an id unique for the engine's life.
        self._lora_requests: dict[str, Any] = {}
        self._lora_ids = itertools.count(1)
        self._running = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self) -> bool:
        vllm = importlib.import_module("vllm")
        tokenizer = load_tokenizer(self.model_dir, trust_remote_code=self.trust_remote_code)
        self._text = Tokenizer(tokenizer, self.model_dir)
        arguments: dict[str, Any] = {
            "model": str(self.model_dir),
            "dtype": self.dtype,
            "max_num_seqs": self.max_num_seqs,
            "trust_remote_code": self.trust_remote_code,
            "enable_lora": True,
            "max_loras": max(1, len(self.loras)),
            "max_lora_rank": _MAX_LORA_RANK,
        }
        if self.requested_max_model_len is not None:
            arguments["max_model_len"] = self.requested_max_model_len
        try:
            self._engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**arguments))
        except Exception as exc:
            raise errors.ModelLoadError(
                f"vLLM cannot load {self.model_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        config = getattr(self._engine, "model_config", None)
        self._max_model_len = int(
            getattr(config, "max_model_len", 0) or self.requested_max_model_len or 0
        )
        eos = tokenizer.eos_token_id
        self._eos_ids = frozenset([eos]) if isinstance(eos, int) else frozenset()
        for name, path in self.loras.items():
            self._lora_requests[name] = self._lora_request(name, path)
        self.ready = True
        return self.ready

    def unload(self) -> None:
        engine, self._engine = self._engine, None
        shutdown = getattr(engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        super().unload()

    def stop(self) -> None:
        self.unload()

    def _loaded(self) -> Any:
        if self._engine is None or self._text is None:
            raise errors.ModelNotReady(self.name)
        return self._engine

    def _tokenizer(self) -> Tokenizer:
        if self._text is None:
            raise errors.ModelNotReady(self.name)
        return self._text

    # -- text ---------------------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self._tokenizer().encode(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer().decode(token_ids)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        return self._tokenizer().apply_chat_template(messages)

    @property
    def max_model_len(self) -> int:
        self._loaded()
        return self._max_model_len

    # -- generation ---------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str,
        adapter: str | None = None,
    ) -> AsyncIterator[TokenEvent]:
        engine = self._loaded()
        if not isinstance(prompt_ids, list) or not prompt_ids:
            raise errors.InvalidInput("The prompt must be a non-empty list of token ids.")
        total = len(prompt_ids) + params.max_tokens
        if self._max_model_len and total > self._max_model_len:
            raise errors.InvalidInput(
                f"This model's maximum context length is {self._max_model_len} tokens; the "
                f"request asks for {total} ({len(prompt_ids)} in the prompt, max_tokens "
                f"{params.max_tokens}). Shorten the prompt or lower max_tokens."
            )
        lora = None
        if adapter is not None and adapter != self.name:
            lora = self._lora_requests.get(adapter)
            if lora is None:
                raise errors.ModelNotFound(adapter)
        sampling = _sampling_params(params)
        text = self._tokenizer()
        emitted_tokens, emitted_text = 0, 0
        self._running += 1
        self._prompt_tokens += len(prompt_ids)
        finished = False
        try:
            stream = engine.generate(
                {"prompt_token_ids": prompt_ids}, sampling, request_id, lora_request=lora
            )
            async for output in stream:
                completion = output.outputs[0]
                new_ids = list(completion.token_ids[emitted_tokens:])
                delta = completion.text[emitted_text:]
                emitted_tokens += len(new_ids)
                emitted_text = len(completion.text)
                reason = completion.finish_reason if output.finished else None
                if reason not in (None, "stop", "length"):
                    raise errors.InferenceError(f"vLLM ended request {request_id}: {reason}.")
                logprobs = list(completion.logprobs or [])[-len(new_ids) :] if new_ids else []
                for index, token_id in enumerate(new_ids):
                    last = index == len(new_ids) - 1
                    self._generation_tokens += 1
                    chosen, top = _logprobs(
                        logprobs[index] if index < len(logprobs) else None,
                        token_id,
                        params.logprobs,
                        text,
                    )
                    yield TokenEvent(
                        token_id=int(token_id),
                        text=delta if last else "",
                        logprob=chosen,
                        top_logprobs=top,
                        finish_reason=reason if last else None,
                    )
                if reason is not None:
                    finished = True
                    return
        finally:
            self._running -= 1
            if not finished:
                # A client that left: vLLM frees the request's blocks (a no-op if done).
                with contextlib.suppress(Exception):
                    await engine.abort(request_id)

    # -- LoRA adapters ------------------------------------------------------------------------

    def _lora_request(self, name: str, path: str) -> Any:
        lora = importlib.import_module("vllm.lora.request")
        return lora.LoRARequest(name, next(self._lora_ids), str(Path(path).expanduser()))

    @property
    def adapters(self) -> list[str]:
        return list(self._lora_requests)

    async def load_adapter(self, name: str, path: str) -> None:
        engine = self._loaded()
        if name == self.name or name in self._lora_requests:
            raise errors.InvalidInput(f"The name {name!r} is already served.")
        request = self._lora_request(name, path)
        try:
            await engine.add_lora(request)
        except Exception as exc:
            raise errors.ModelLoadError(
                f"vLLM cannot load the LoRA adapter {name!r} from {path}: {exc}"
            ) from exc
        self._lora_requests[name] = request

    async def unload_adapter(self, name: str) -> None:
        engine = self._loaded()
        request = self._lora_requests.pop(name, None)
        if request is None:
            raise errors.ModelNotFound(name)
        await engine.remove_lora(request.lora_int_id)

    # -- observability ------------------------------------------------------------------------

    @property
    def stats(self) -> Mapping[str, Any]:
        """Counted here, not by vLLM: its own Prometheus metrics have the engine's view."""
        return {
            "running": self._running,
            "waiting": 0,
            "kv_cache_usage": None,
            "prompt_tokens_total": self._prompt_tokens,
            "generation_tokens_total": self._generation_tokens,
        }

    @property
    def platform(self) -> str:
        return "vllm"


def _sampling_params(params: SamplingParams) -> Any:
    vllm = importlib.import_module("vllm")
    options: dict[str, Any] = {
        "n": 1,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "seed": params.seed,
        "stop": list(params.stop),
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "ignore_eos": params.ignore_eos,
    }
    if params.logprobs is not None:
        options["logprobs"] = params.logprobs
    return vllm.SamplingParams(**options)


def _logprobs(
    entry: Mapping[int, Any] | None, token_id: int, wanted: int | None, text: Tokenizer
) -> tuple[float | None, list[tuple[str, float]] | None]:
    """The chosen token's log probability and the ``wanted`` most likely alternatives."""
    if wanted is None or entry is None:
        return None, None
    chosen = entry.get(token_id)
    ranked = sorted(entry.items(), key=lambda item: getattr(item[1], "rank", 0) or 0)
    top = [
        (
            getattr(logprob, "decoded_token", None) or text.token_text(int(tid)),
            float(logprob.logprob),
        )
        for tid, logprob in ranked
    ][:wanted]
    return (float(chosen.logprob) if chosen is not None else None), top
