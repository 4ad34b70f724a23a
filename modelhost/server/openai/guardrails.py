"""Guardrails: filters on the text that enters a generative model and the text it returns.

A :class:`Guardrail` may rewrite a prompt or refuse it (``ContentFiltered``: a 400 with code
``content_filter``), and may rewrite or refuse generated text (a refusal ends that choice
with ``finish_reason`` "content_filter"). The server runs a :class:`GuardrailChain` of them,
in order, on every prompt (each prompt, each chat message's text, each embedding input) and
every output. :class:`RegexPIIRedactor` is the built-in one; detectors of the trust layer
implement the same interface.

Streaming: a filter sees whole text, never a string split across chunks. Each choice's
deltas go through an :class:`OutputStream`, which holds back the tail that a later chunk
could still turn into something a guardrail changes (:meth:`Guardrail.holdback`), and
releases text only up to where every guardrail says it is settled. For the PII redactor
the held tail is the current word (a run of characters that can be part of an e-mail
address or a number), so the stream lags by at most one word, and by at most
:data:`MAX_HOLDBACK` characters on text with no word breaks at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from modelhost import errors
from modelhost.server.openai.errors import ContentFiltered

__all__ = [
    "BUILTIN_GUARDRAILS",
    "MAX_HOLDBACK",
    "ContentFiltered",
    "Guardrail",
    "GuardrailChain",
    "OutputStream",
    "RegexPIIRedactor",
    "chain_from_names",
]

# The longest tail an output stream holds back; every PII pattern below is shorter.
MAX_HOLDBACK = 512


class Guardrail:
    """A filter on model input and output; every method's default lets the text through."""

    name = "guardrail"

    async def check_input(self, text: str, *, role: str | None = None) -> str:
        """``text`` as the model should see it; raise ``ContentFiltered`` to refuse it.

        ``role`` is the chat message's role, None for a completion prompt or an embedding input.
        """
        return text

    async def check_output(self, text: str) -> str:
        """Generated ``text`` as the client should see it; raise ``ContentFiltered`` to stop."""
        return text

    def holdback(self, text: str) -> int:
        """How many trailing characters of streamed ``text`` a later chunk may still change
        the verdict on: they are held back until more text (or the end) comes."""
        return 0


# A character that cannot be inside any pattern below: whitespace after anything but a
# digit or ")" (numbers are written in groups: "555 123 4567", "(555) 123-4567"), or any
# character outside the patterns' alphabet.
_BREAK = re.compile(r"(?<![\d)])\s|[^A-Za-z0-9._%+\-@()\s]", re.ASCII)

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "EMAIL",
        re.compile(
            r"[A-Za-z0-9._%+\-]{1,64}@(?:[A-Za-z0-9\-]{1,63}\.){1,6}[A-Za-z]{2,24}\b", re.ASCII
        ),
    ),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b", re.ASCII)),
    # 13 to 19 digits, optionally grouped by spaces or dashes: card numbers.
    ("CREDIT_CARD", re.compile(r"\b(?:\d[ \-]?){12,18}\d\b", re.ASCII)),
    # An optional +country code, then 3-3-4 digits: "(555) 123-4567", "+1 555.123.4567".
    (
        "PHONE",
        re.compile(
            r"(?:(?<![\w+])\+\d{1,3}[ .\-]?|(?<![\w+]))"
            r"(?:\(\d{3}\)|\d{3})[ .\-]?\d{3}[ .\-]?\d{4}(?!\w)",
            re.ASCII,
        ),
    ),
)


class RegexPIIRedactor(Guardrail):
    """Replaces e-mail addresses, phone numbers, card-like numbers and US SSNs with
    ``[REDACTED:<KIND>]``, in prompts and in outputs (streamed ones included).

    Regular expressions find formats, not facts: any 13-19 digit number is taken for a card.
    """

    name = "pii"

    def __init__(self, kinds: Sequence[str] | None = None) -> None:
        wanted = {k.upper() for k in kinds} if kinds is not None else None
        self.patterns = [(k, p) for k, p in _PATTERNS if wanted is None or k in wanted]

    def redact(self, text: str) -> str:
        for kind, pattern in self.patterns:
            if kind == "EMAIL" and "@" not in text:
                continue
            text = pattern.sub(f"[REDACTED:{kind}]", text)
        return text

    async def check_input(self, text: str, *, role: str | None = None) -> str:
        return self.redact(text)

    async def check_output(self, text: str) -> str:
        return self.redact(text)

    def holdback(self, text: str) -> int:
        tail_start = 0
        # The last break ends the settled text; only the window where a match could be
        # is searched, so that a long stream costs no more per chunk than a short one.
        window = max(0, len(text) - MAX_HOLDBACK - 1)
        for match in _BREAK.finditer(text, window):
            tail_start = match.end()
        held = len(text) - tail_start
        if held <= MAX_HOLDBACK:
            return held
        # No break within the limit: release all but the limit, never cutting a match.
        cut = len(text) - MAX_HOLDBACK
        for _, pattern in self.patterns:
            for match in pattern.finditer(text, max(0, cut - MAX_HOLDBACK)):
                if match.start() < cut < match.end():
                    cut = match.start()
        return len(text) - cut


BUILTIN_GUARDRAILS = {"pii": RegexPIIRedactor}


class GuardrailChain:
    """The server's guardrails, run in order; an empty chain costs nothing per token."""

    def __init__(self, guardrails: Sequence[Guardrail] = ()) -> None:
        self.guardrails = list(guardrails)

    def __bool__(self) -> bool:
        return bool(self.guardrails)

    async def check_input(self, text: str, *, role: str | None = None) -> str:
        for guardrail in self.guardrails:
            text = await guardrail.check_input(text, role=role)
        return text

    async def check_output(self, text: str) -> str:
        for guardrail in self.guardrails:
            text = await guardrail.check_output(text)
        return text

    def holdback(self, text: str) -> int:
        return max((g.holdback(text) for g in self.guardrails), default=0)

    def output_stream(self) -> OutputStream:
        return OutputStream(self)


class OutputStream:
    """One streamed choice's text through the chain: :meth:`push` deltas, then :meth:`finish`.

    Holdback is judged on the raw text, before any guardrail rewrites it.
    """

    def __init__(self, chain: GuardrailChain) -> None:
        self.chain = chain
        self.pending = ""

    async def push(self, delta: str) -> str:
        """The filtered text that ``delta`` settles (often empty while a word is open)."""
        if not delta:
            return ""
        text = self.pending + delta
        held = self.chain.holdback(text)
        ready, self.pending = text[: len(text) - held], text[len(text) - held :]
        return await self.chain.check_output(ready) if ready else ""

    async def finish(self) -> str:
        """The filtered rest of the text, at the end of the choice."""
        ready, self.pending = self.pending, ""
        return await self.chain.check_output(ready) if ready else ""


def chain_from_names(names: str) -> GuardrailChain:
    """A chain of built-in guardrails from a comma-separated list (``"pii"``)."""
    guardrails: list[Guardrail] = []
    for raw in names.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        factory = BUILTIN_GUARDRAILS.get(name)
        if factory is None:
            known = ", ".join(sorted(BUILTIN_GUARDRAILS))
            raise errors.InvalidInput(f"Unknown guardrail {name!r}; built-in ones: {known}.")
        guardrails.append(factory())
    return GuardrailChain(guardrails)
