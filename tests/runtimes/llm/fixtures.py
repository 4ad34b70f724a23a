"""A tiny random Llama causal LM and its byte-level BPE tokenizer, built offline for LLM tests.

The tokenizer is trained here on a few sentences, so nothing is downloaded; it is byte-level,
so characters outside the corpus (an emoji) span several tokens and exercise incremental
detokenization. The model's weights are random but seeded: its outputs are gibberish, yet the
same gibberish on every run, which is all the engine's tests compare.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "CORPUS",
    "EOS",
    "PAD",
    "VOCAB_SIZE",
    "build_lora_adapter",
    "build_tiny_llama",
    "build_tiny_mistral",
    "build_tokenizer",
]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
VOCAB_SIZE = 384
MAX_POSITIONS = 256
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a model server answers requests with tokens",
    "continuous batching lets requests join and leave between decode steps",
    "hello world, hello engine, hello tokens",
    "café crème brûlée naïve façade über straße",
    "one two three four five six seven eight nine ten",
    "what is the capital of france? paris is the capital of france.",
    "user: hi there\nassistant: hello, how can i help you today?",
]
# Role headers in angle brackets, one message a line; the prompt ends with the assistant's header.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<{{ message['role'] }}>{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def build_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast``: byte-level BPE with bos, eos, pad and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK]
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    """Save a random two-layer Llama (hidden 64, 4 heads, 2 KV heads) and its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return _build_tiny(folder, LlamaConfig, LlamaForCausalLM, seed)


def build_tiny_mistral(folder: Path, *, sliding_window: int | None, seed: int = 0) -> Path:
    """Save a random two-layer Mistral: a Llama but for its sliding attention window."""
    from transformers import MistralConfig, MistralForCausalLM

    return _build_tiny(
        folder, MistralConfig, MistralForCausalLM, seed, sliding_window=sliding_window
    )


def _build_tiny(folder: Path, config_class: Any, model_class: Any, seed: int, **extra: Any) -> Path:
    import torch
    from transformers import GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        # Wider than the default 0.02: a random model's logits are then far apart, so its
        # greedy choices do not hinge on float rounding.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_lora_adapter(folder: Path, base: Path, *, seed: int) -> Path:
    """Save a random rank-4 LoRA adapter for the tiny Llama (attention and MLP projections).

    ``init_lora_weights=False`` draws both matrices at random (peft's default leaves B at
    zero, an adapter that changes nothing), so the adapter's greedy tokens differ from the
    base model's.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False,
    )
    with warnings.catch_warnings():
        # peft asks transformers 5 for a property it deprecated.
        warnings.simplefilter("ignore", FutureWarning)
        adapter = get_peft_model(model, config)
    adapter.save_pretrained(str(folder))
    return folder
