"""The ``llm`` runtime: the folders it takes, its options, and the backend it picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.cli import build_parser, runtime_options
from modelhost.runtimes import build_model, detect_runtime
from modelhost.runtimes.huggingface import HuggingFaceModel
from modelhost.runtimes.llm import LLMModel
from modelhost.runtimes.llm import runtime as llm_runtime
from modelhost.runtimes.llm.runtime import lora_modules, select_backend
from modelhost.runtimes.llm.vllm_backend import VLLMModel


def hf_folder(folder: Path, config: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(config)
    (folder / "model.safetensors").write_bytes(b"not a model")  # detection must not read it
    return folder


@pytest.mark.parametrize(
    ("architecture", "runtime"),
    [
        ("LlamaForCausalLM", "llm"),
        ("Qwen2ForCausalLM", "llm"),
        ("GPT2LMHeadModel", "llm"),
        ("BertForSequenceClassification", "huggingface"),
        ("BertModel", "huggingface"),
        ("T5ForConditionalGeneration", "huggingface"),
    ],
)
def test_causal_lm_folders_are_the_llm_runtimes(
    tmp_path: Path, architecture: str, runtime: str
) -> None:
    config = json.dumps({"architectures": [architecture]}).encode()
    assert detect_runtime(hf_folder(tmp_path, config)) == runtime


@pytest.mark.parametrize("config", [b"not json", b"[]", b'{"model_type": "llama"}'])
def test_a_config_that_does_not_say_stays_huggingface(tmp_path: Path, config: bytes) -> None:
    assert detect_runtime(hf_folder(tmp_path, config)) == "huggingface"


def test_the_tiny_llama_is_served_by_the_transformers_backend(tiny_llama: Path) -> None:
    assert detect_runtime(tiny_llama) == "llm"
    assert not llm_runtime.vllm_installed(), "vLLM is installed: auto would pick it on a GPU"
    assert select_backend(None) == select_backend("auto") == "transformers"
    assert select_backend("huggingface") == select_backend(" Transformers ") == "transformers"
    for options in ({}, {"backend": "auto"}, {"backend": "transformers"}):
        assert isinstance(build_model(tiny_llama, "m", options=options), LLMModel)


def test_vllm_without_vllm_is_a_clear_load_error(tiny_llama: Path) -> None:
    with pytest.raises(errors.ModelLoadError, match=r"vllm backend needs vLLM.*pip install vllm"):
        build_model(tiny_llama, "m", options={"backend": "vllm"})
    with pytest.raises(errors.ModelLoadError, match="vllm backend needs vLLM"):
        build_model(tiny_llama, "m", runtime="vllm")
    with pytest.raises(errors.ModelLoadError, match="Unknown LLM backend 'tgi'"):
        build_model(tiny_llama, "m", options={"backend": "tgi"})


def test_auto_picks_vllm_where_it_runs(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_runtime, "vllm_installed", lambda: True)
    monkeypatch.setattr(llm_runtime, "vllm_usable", lambda: True)
    model = build_model(tiny_llama, "m", options={"lora": "sql=/adapters/sql", "max_num_seqs": 8})
    assert isinstance(model, VLLMModel)
    assert (model.max_num_seqs, model.loras) == (8, {"sql": "/adapters/sql"})
    assert isinstance(build_model(tiny_llama, "m", runtime="vllm"), VLLMModel)
    assert isinstance(build_model(tiny_llama, "m", options={"backend": "transformers"}), LLMModel)
    # Installed, but no GPU: auto stays on transformers.
    monkeypatch.setattr(llm_runtime, "vllm_usable", lambda: False)
    assert isinstance(build_model(tiny_llama, "m"), LLMModel)


def test_the_huggingface_runtime_hands_text_generation_over(tiny_llama: Path) -> None:
    # KServe's huggingface server takes --task text_generation, and causal LM folders.
    for options in ({}, {"task": "text_generation"}, {"task": "text-generation"}):
        model = build_model(tiny_llama, "m", runtime="huggingface", options=options)
        assert isinstance(model, LLMModel)
    with pytest.raises(errors.ModelLoadError, match="not task 'fill_mask'"):
        build_model(tiny_llama, "m", runtime="llm", options={"task": "fill_mask"})
    model = build_model(tiny_llama, "m", runtime="huggingface", options={"task": "fill_mask"})
    assert isinstance(model, HuggingFaceModel)


def test_lora_modules() -> None:
    assert lora_modules(None) == lora_modules("") == {}
    assert lora_modules(["a=/x", " b = /y "]) == {"a": "/x", "b": "/y"}
    assert lora_modules("a=/x,b=/y=z") == {"a": "/x", "b": "/y=z"}
    for bad in (["a"], ["=/x"], ["a="], ["a=/x", "a=/y"], 3):
        with pytest.raises(errors.ModelLoadError, match=r"(?i)lora"):
            lora_modules(bad)


def test_command_line_options(tiny_llama: Path) -> None:
    args = build_parser().parse_args(
        [
            *("serve", str(tiny_llama), "--backend", "transformers", "--max-num-seqs", "3"),
            *("--max_model_len", "100", "--dtype", "float32"),
            *("--lora", "a=/x", "--lora-modules", "b=/y"),
        ]
    )
    options = runtime_options(args)
    assert options == {
        "backend": "transformers",
        "max_num_seqs": 3,
        "max_model_len": 100,
        "dtype": "float32",
        "lora": ["a=/x", "b=/y"],
    }
    model = build_model(tiny_llama, "m", options=options)
    assert isinstance(model, LLMModel)
    assert (model.max_num_seqs, model.requested_max_model_len, model.dtype) == (3, 100, "float32")
    assert model.loras == {"a": "/x", "b": "/y"}
    assert runtime_options(build_parser().parse_args(["serve", str(tiny_llama)])) == {}
    with pytest.raises(errors.ModelLoadError, match="max_num_seqs takes an integer"):
        build_model(tiny_llama, "m", options={"max_num_seqs": "many"})
