"""LLM generation on ``transformers`` with continuous batching, below the OpenAI API layer.

Importing this package does not import torch: ``Engine`` loads it when built.
"""

from __future__ import annotations

from modelhost.model.generation import EngineOverloaded, SamplingParams, TokenEvent
from modelhost.runtimes.llm.engine import Engine

__all__ = ["Engine", "EngineOverloaded", "SamplingParams", "TokenEvent"]
