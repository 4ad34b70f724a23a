"""The ``llm`` runtime: causal LMs served as ``GenerativeModel``, below the OpenAI API layer.

``LLMModel`` serves a Hugging Face folder with the ``transformers`` ``Engine`` (continuous
batching, LoRA adapters in the same batch); ``vllm_backend.VLLMModel`` serves it with vLLM
on a GPU; ``runtime`` detects the folders and picks the backend. Importing this package
imports neither torch nor vLLM: they load when a model is built or loaded.
"""

from __future__ import annotations

from modelhost.model.generation import EngineOverloaded, SamplingParams, TokenEvent
from modelhost.runtimes.llm.engine import Engine
from modelhost.runtimes.llm.model import LLMModel

__all__ = ["Engine", "EngineOverloaded", "LLMModel", "SamplingParams", "TokenEvent"]
