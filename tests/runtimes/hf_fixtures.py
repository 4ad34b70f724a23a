"""Tiny BERT models for the Hugging Face runtime's tests, built and briefly trained here.

Each is a real transformers model saved with ``save_pretrained`` next to a WordPiece
vocabulary written by the test; a few dozen optimizer steps on a handful of sentences teach
it answers a test can name ("the capital of france is [MASK]" -> "paris"), so the tests
check what the server answers, not only that it answers something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "ENTITY",
    "MASKED",
    "NEGATIVE",
    "POSITIVE",
    "build_base",
    "build_masked_lm",
    "build_sequence_classifier",
    "build_token_classifier",
    "write_tokenizer",
]

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    *("the", "a", "is", "of", "and", "i", "am", "my", "dog", "cat", "lives", "in", "capital"),
    *("france", "paris", "italy", "rome", "happy", "sad", "good", "bad", "day", "very"),
]
MAX_POSITIONS = 32

# sequence_classification: class 1 for these, class 0 for those.
POSITIVE = ["i am happy", "a very good day", "my dog is happy", "good cat"]
NEGATIVE = ["i am sad", "a very bad day", "my dog is sad", "bad cat"]
# token_classification: class 1 for the places, 0 for the other words.
ENTITY = {"paris", "france", "italy", "rome"}
TAGGED = [
    "my dog lives in paris",
    "the capital of france is paris",
    "rome is the capital of italy",
    "i am in rome",
    "my cat is happy",
]
# fill_mask: the masked sentence and the word it must fill in.
MASKED = {
    "the capital of france is [MASK]": "paris",
    "the capital of [MASK] is paris": "france",
    "the capital of italy is [MASK]": "rome",
    "the capital of [MASK] is rome": "italy",
}


def write_tokenizer(folder: Path) -> None:
    """A WordPiece vocabulary and the config that makes it a lower-casing BERT tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL, *WORDS]) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": MAX_POSITIONS,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **extra,
    )


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _train(model: Any, batch: dict[str, Any], steps: int) -> None:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()


def _save(model: Any, folder: Path) -> Path:
    model.save_pretrained(str(folder))
    return folder


def build_sequence_classifier(folder: Path) -> Path:
    """Three classes (the third never taught), ids 1 for ``POSITIVE`` and 0 for ``NEGATIVE``."""
    import torch
    from transformers import BertForSequenceClassification

    write_tokenizer(folder)
    tokenizer = _tokenizer(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(num_labels=3))
    batch = dict(tokenizer(POSITIVE + NEGATIVE, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    _train(model, batch, steps=30)
    return _save(model, folder)


def build_token_classifier(folder: Path) -> Path:
    """Two classes per token: 1 for the ``ENTITY`` words, 0 for the others."""
    import torch
    from transformers import BertForTokenClassification

    write_tokenizer(folder)
    tokenizer = _tokenizer(folder)
    torch.manual_seed(0)
    model = BertForTokenClassification(_config(num_labels=2))
    batch = dict(tokenizer(TAGGED, padding=True, return_tensors="pt"))
    labels = []
    for ids in batch["input_ids"].tolist():
        tokens = tokenizer.convert_ids_to_tokens(ids)
        # -100: special and padding tokens are not taught.
        labels.append([-100 if t in SPECIAL else int(t in ENTITY) for t in tokens])
    batch["labels"] = torch.tensor(labels)
    _train(model, batch, steps=40)
    return _save(model, folder)


def build_masked_lm(folder: Path) -> Path:
    """Fills each ``MASKED`` sentence's mask with its word."""
    import torch
    from transformers import BertForMaskedLM

    write_tokenizer(folder)
    tokenizer = _tokenizer(folder)
    torch.manual_seed(0)
    model = BertForMaskedLM(_config())
    masked = list(MASKED)
    full = [text.replace("[MASK]", word) for text, word in MASKED.items()]
    batch = dict(tokenizer(masked, padding=True, return_tensors="pt"))
    targets = tokenizer(full, padding=True, return_tensors="pt")["input_ids"]
    mask = batch["input_ids"] == tokenizer.mask_token_id
    batch["labels"] = torch.where(mask, targets, torch.full_like(targets, -100))
    _train(model, batch, steps=60)
    return _save(model, folder)


def build_base(folder: Path) -> Path:
    """An untrained ``BertModel``: a bare encoder, served for text embeddings."""
    import torch
    from transformers import BertModel

    write_tokenizer(folder)
    torch.manual_seed(0)
    return _save(BertModel(_config()).eval(), folder)
