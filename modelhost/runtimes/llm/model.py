"""``LLMModel``: the ``transformers`` engine served as a ``GenerativeModel``.

What the server's OpenAI layer calls. ``load`` builds the engine (blocking: the server runs
it off the event loop); the engine's worker thread starts on the first ``generate`` (or
adapter load), in the process that serves, so a server that forks its workers after loading
starts one worker thread in each of them. ``unload`` and ``stop`` never block the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.model.generation import GenerativeModel, SamplingParams, TokenEvent
from modelhost.runtimes.llm.engine import Engine

__all__ = ["LLMModel"]

_NO_STATS: Mapping[str, Any] = {
    "running": 0,
    "waiting": 0,
    "kv_cache_usage": 0.0,
    "prompt_tokens_total": 0,
    "generation_tokens_total": 0,
}


class LLMModel(GenerativeModel):
    """A Hugging Face causal LM folder served with continuous batching on ``transformers``.

    ``max_num_seqs`` requests decode together (vLLM's name for the running batch's size);
    up to ``max_queue`` more wait, and past that a request gets a 429. ``loras`` maps
    adapter names to LoRA adapter folders served from the start; ``load_adapter`` adds more
    at run time. Each adapter is a model name of its own, generated in the same batch as
    the base model.
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        *,
        max_num_seqs: int = 16,
        max_queue: int = 64,
        max_model_len: int | None = None,
        max_prefill_tokens: int = 4096,
        dtype: str = "auto",
        device: str = "cpu",
        nthread: int | None = None,
        loras: Mapping[str, str] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.max_num_seqs = max_num_seqs
        self.max_queue = max_queue
        self.requested_max_model_len = max_model_len
        self.max_prefill_tokens = max_prefill_tokens
        self.dtype = dtype
        self.device = device
        self.nthread = nthread
        self.loras = dict(loras or {})
        if name in self.loras:
            raise errors.ModelLoadError(
                f"The LoRA adapter {name!r} has the base model's name; give it another."
            )
        self.trust_remote_code = trust_remote_code
        self._engine: Engine | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self) -> bool:
        if self._engine is not None:
            return self.ready
        self._engine = Engine(
            self.model_dir,
            max_batch_size=self.max_num_seqs,
            max_queue=self.max_queue,
            device=self.device,
            dtype=self.dtype,
            max_model_len=self.requested_max_model_len,
            max_prefill_tokens=self.max_prefill_tokens,
            threads=self.nthread,
            trust_remote_code=self.trust_remote_code,
            loras=self.loras,
        )
        self.ready = True
        return self.ready

    def unload(self) -> None:
        """Stop serving: running requests get ``ServerNotReady``; returns without waiting."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown(wait=False)
        super().unload()

    def stop(self) -> None:
        self.unload()

    def _running(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise errors.ModelNotReady(self.name)
        engine.launch()
        return engine

    def _loaded(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise errors.ModelNotReady(self.name)
        return engine

    # -- text ---------------------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self._loaded().encode_prompt(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._loaded().decode(token_ids)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        return self._loaded().apply_chat_template(messages)

    @property
    def max_model_len(self) -> int:
        return self._loaded().max_model_len

    # -- generation ---------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str,
        adapter: str | None = None,
    ) -> AsyncIterator[TokenEvent]:
        """Stream one completion; errors (404 for an unknown adapter, 429 when the queue is
        full, 400 for a prompt too long) come on the first iteration."""
        engine = self._running()
        if adapter == self.name:
            adapter = None
        stream = engine.generate(prompt_ids, params, request_id=request_id, adapter=adapter)
        async with aclosing(stream) as events:
            async for event in events:
                yield event

    # -- LoRA adapters ------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        engine = self._engine
        return engine.adapters if engine is not None else []

    async def load_adapter(self, name: str, path: str) -> None:
        """Serve the LoRA adapter in folder ``path`` as model ``name``, from the next step on.

        ``InvalidInput`` if the name is taken, ``ModelLoadError`` if the folder holds no
        LoRA adapter for this model.
        """
        if name == self.name:
            raise errors.InvalidInput(f"{name!r} is the base model's name; name the adapter.")
        await self._running().load_adapter(name, path)

    async def unload_adapter(self, name: str) -> None:
        """Stop serving adapter ``name``; its requests in flight fail with ``ModelNotFound``."""
        await self._running().unload_adapter(name)

    # -- observability ------------------------------------------------------------------------

    @property
    def stats(self) -> Mapping[str, Any]:
        engine = self._engine
        return engine.stats if engine is not None else dict(_NO_STATS)

    @property
    def platform(self) -> str:
        return "huggingface"
