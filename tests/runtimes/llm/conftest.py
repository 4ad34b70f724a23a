"""The tiny random Llama and two LoRA adapters for it, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import build_lora_adapter, build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the model, its byte-level BPE tokenizer and a chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def lora_adapters(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different random LoRA adapters over ``tiny_llama``, by name."""
    root = tmp_path_factory.mktemp("lora")
    return {
        name: build_lora_adapter(root / name, tiny_llama, seed=seed)
        for name, seed in (("sql", 1), ("poet", 2))
    }
