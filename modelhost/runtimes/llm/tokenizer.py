"""A Hugging Face tokenizer shared by threads: prompts to ids, ids to text, chat templates.

Both LLM backends use it: the ``transformers`` engine, and the vLLM backend, whose engine
takes token ids, so the API layer counts and checks prompts the same way on either.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.runtimes._common import import_framework

__all__ = ["Tokenizer", "load_tokenizer"]


class Tokenizer:
    """Thread-safe calls on one tokenizer: a fast tokenizer used from two threads at once can
    fail with "Already borrowed"."""

    def __init__(self, tokenizer: Any, model_dir: Path) -> None:
        self.tokenizer = tokenizer
        self._model_dir = model_dir
        self._lock = threading.Lock()

    def encode(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        """The prompt's token ids; a chat-templated prompt already has its special tokens."""
        if not isinstance(prompt, str):
            raise errors.InvalidInput(f"prompt must be a string, not {type(prompt).__name__}.")
        with self._lock:
            ids = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        return [int(i) for i in ids]

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, special tokens left out (for ``echo``)."""
        with self._lock:
            return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def token_text(self, token_id: int) -> str:
        """One token's own text, special or not (for log probabilities)."""
        with self._lock:
            return str(self.tokenizer.decode([token_id]))

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """The prompt the model's chat template makes of ``messages``, ready for a reply."""
        if not isinstance(messages, list) or not messages:
            raise errors.InvalidInput("messages must be a non-empty list.")
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise errors.InvalidInput(f"messages[{index}] must be an object with a role.")
        if not getattr(self.tokenizer, "chat_template", None):
            raise errors.InvalidInput(
                f"The model in {self._model_dir} has no chat template; use completions instead."
            )
        try:
            with self._lock:
                text = self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
        except Exception as exc:
            # Templates reject what they cannot render (say, roles out of turn) by raising.
            raise errors.InvalidInput(f"The chat template refused the messages: {exc}") from exc
        return str(text)

    def batch(self, texts: list[str], *, max_length: int) -> Any:
        """``texts`` padded to the longest and truncated to ``max_length``, as torch tensors."""
        with self._lock:
            return self.tokenizer(
                texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )


def load_tokenizer(model_dir: Path, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved in ``model_dir``, from local files only."""
    transformers = import_framework("transformers", "huggingface")
    options: dict[str, Any] = {"local_files_only": True}
    if trust_remote_code:
        options["trust_remote_code"] = True
    try:
        return transformers.AutoTokenizer.from_pretrained(str(model_dir), **options)
    except Exception as exc:
        raise errors.ModelLoadError(
            f"Cannot load the tokenizer in {model_dir}: {type(exc).__name__}: {exc}"
        ) from exc
