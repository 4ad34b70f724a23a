"""What GJSON's query operators answer for a value a path found: its comparisons and patterns.

GJSON compares by the found value's JSON type: strings by byte order, numbers as float64 (the
query's value read with ``strconv.ParseFloat``, 0 when it cannot be read), booleans only with
the words ``true``/``false`` (``false < true``), and null, objects and arrays with nothing; a
query without an operator asks only that the value exists. ``~true``, ``~false``, ``~null`` and
``~*`` first turn the value into a boolean. ``%`` and ``!%`` match tidwall/match patterns.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["MISSING", "WildcardPattern", "compare"]

# strconv.ParseBool's spellings, lower-cased as GJSON's ``~`` forms lower-case them.
_TRUE_WORDS: Final = frozenset({"1", "t", "true"})
_FALSE_WORDS: Final = frozenset({"0", "f", "false"})


class _Missing:
    """What a path finds where there is nothing (GJSON's non-existent result)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


class WildcardPattern:
    """A ``*`` / ``?`` / ``\\`` pattern (tidwall/match), matched without backtracking blow-up.

    The pattern splits at its ``*`` s into fixed-length segments; the first must match at the
    start, the last at the end, and the ones between are found leftmost-first in order, which
    is exact for patterns whose only repetition is ``*``, and linear in the text per segment.
    """

    __slots__ = ("_last_length", "_segments")

    def __init__(self, pattern: str) -> None:
        segments: list[list[str]] = [[]]
        index = 0
        while index < len(pattern):
            char = pattern[index]
            if char == "\\" and index + 1 < len(pattern):
                index += 1
                segments[-1].append(re.escape(pattern[index]))
            elif char == "*":
                segments.append([])
            elif char == "?":
                segments[-1].append(".")
            else:
                segments[-1].append(re.escape(char))
            index += 1
        self._segments = [re.compile("".join(tokens), re.DOTALL) for tokens in segments]
        # One token is one character of the text: the last segment's start is known.
        self._last_length = len(segments[-1])

    def matches(self, text: str) -> bool:
        segments = self._segments
        if len(segments) == 1:
            return segments[0].fullmatch(text) is not None
        first = segments[0].match(text)
        if first is None:
            return False
        position = first.end()
        end = len(text) - self._last_length
        if end < position or segments[-1].fullmatch(text, end) is None:
            return False
        for segment in segments[1:-1]:
            found = segment.search(text, position, end)
            if found is None:
                return False
            position = found.end()
        return True


def compare(operator: str, target: str, pattern: WildcardPattern | None, value: Any) -> bool:
    """Whether a value a query found (or :data:`MISSING`) satisfies ``operator`` ``target``."""
    if target.startswith("~"):
        value = _tilde(target[1:], value)
        if value is MISSING:
            return False
        target = "true"
    if value is MISSING:
        return False
    if not operator:
        return True
    # bool before numbers: Python's True is an int.
    if value is True:
        return _compare_true(operator, target)
    if value is False:
        return _compare_false(operator, target)
    if isinstance(value, str):
        return _compare_strings(operator, pattern, value, target)
    if isinstance(value, (int, float)):
        return _compare_numbers(operator, _as_float(value), _parse_float(target))
    return False  # null, objects and arrays compare with nothing


def _tilde(kind: str, value: Any) -> Any:
    if kind == "*":
        return value is not MISSING
    if kind == "null":
        return value is MISSING or value is None
    if kind == "true":
        return _trueish(value)
    if kind == "false":
        return _falseish(value)
    return MISSING


def _trueish(value: Any) -> bool:
    if value is True:
        return True
    if isinstance(value, str):
        return value.lower() in _TRUE_WORDS
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    return False


def _falseish(value: Any) -> bool:
    if value is MISSING or value is None or value is False:
        return True
    if isinstance(value, str):
        return value.lower() in _FALSE_WORDS
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    return False


def _compare_true(operator: str, target: str) -> bool:
    # GJSON orders false < true and compares a boolean with the words true/false only.
    if operator == "=":
        return target == "true"
    if operator == "!=":
        return target != "true"
    if operator == ">":
        return target == "false"
    return operator == ">="


def _compare_false(operator: str, target: str) -> bool:
    if operator == "=":
        return target == "false"
    if operator == "!=":
        return target != "false"
    if operator == "<":
        return target == "true"
    return operator == "<="


def _compare_strings(
    operator: str, pattern: WildcardPattern | None, value: str, target: str
) -> bool:
    if operator in ("%", "!%"):
        assert pattern is not None
        return pattern.matches(value) == (operator == "%")
    # Go compares UTF-8 bytes; code point order is the same order.
    if operator == "=":
        return value == target
    if operator == "!=":
        return value != target
    if operator == "<":
        return value < target
    if operator == "<=":
        return value <= target
    if operator == ">":
        return value > target
    return operator == ">=" and value >= target


def _compare_numbers(operator: str, value: float, target: float) -> bool:
    if operator == "=":
        return value == target
    if operator == "!=":
        return value != target
    if operator == "<":
        return value < target
    if operator == "<=":
        return value <= target
    if operator == ">":
        return value > target
    return operator == ">=" and value >= target


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def _parse_float(text: str) -> float:
    # strconv.ParseFloat: what it cannot read is 0; Python's float() also reads "1_0".
    if "_" in text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0
