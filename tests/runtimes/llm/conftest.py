"""The tiny random Llama, built once per session for every LLM test."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the model, its byte-level BPE tokenizer and a chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
