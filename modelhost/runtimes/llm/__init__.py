"""LLM generation on ``transformers`` with continuous batching, below the OpenAI API layer.

Importing this package does not import torch: ``Engine`` loads it when built.
"""

from __future__ import annotations

from modelhost.runtimes.llm.engine import Engine
from modelhost.runtimes.llm.params import EngineOverloaded, SamplingParams, TokenEvent

__all__ = ["Engine", "EngineOverloaded", "SamplingParams", "TokenEvent"]
