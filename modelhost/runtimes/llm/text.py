"""Token ids to streamed text: whole characters only, and never the start of a stop string.

A byte-level tokenizer can split one character over several tokens, and a SentencePiece
tokenizer decodes a word's leading space only next to the token before it; so each new
token is decoded together with a few tokens before it, and its text is released only once
it no longer ends in an incomplete character (U+FFFD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["Detokenizer", "StopText"]

# Tokens of context decoded before the new ones; enough for any tokenizer's merges around
# a word boundary.
_CONTEXT = 6
_REPLACEMENT = "\ufffd"

Decode = Callable[[list[int]], str]


class Detokenizer:
    """Decodes a sequence's new tokens one at a time into text deltas."""

    def __init__(self, decode: Decode, prompt_ids: Sequence[int]) -> None:
        self._decode = decode
        self._ids = list(prompt_ids[-_CONTEXT:])
        # _ids[_prefix:_read] is text already released; _ids[_read:] is held back.
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        """The text ``token_id`` completes; empty while a character is still incomplete."""
        self._ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """Whatever text is held back, incomplete characters included: the sequence ended."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) and not final:
            return ""
        if after.endswith(_REPLACEMENT) and not final:
            return ""
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix > 4 * _CONTEXT:
            # Keep the decoded window short: only the tokens after _prefix matter now.
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return delta


class StopText:
    """Releases generated text, holding back what may be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""

    def push(self, delta: str) -> tuple[str, bool]:
        """The text safe to send now, and whether a stop string was reached (and cut off)."""
        if not self._stops:
            return delta, False
        self._pending += delta
        hits = [i for i in (self._pending.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            released = self._pending[: min(hits)]
            self._pending = ""
            return released, True
        hold = max(_partial_match(self._pending, stop) for stop in self._stops)
        cut = len(self._pending) - hold
        released, self._pending = self._pending[:cut], self._pending[cut:]
        return released, False

    def flush(self) -> str:
        """The text held back: the sequence ended without completing a stop string."""
        released, self._pending = self._pending, ""
        return released


def _partial_match(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that begins ``stop`` without being all of it."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
