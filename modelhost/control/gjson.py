"""A step's ``condition``, evaluated on a JSON body as KServe's Go router does, with GJSON.

KServe's router picks a Switch step, and lets a Sequence step run, when
``gjson.GetBytes(body, condition).Exists()``: when the GJSON path finds a value (JSON ``null``
counts; a ``#(...)#`` query that matches nothing finds ``[]``, which counts too). A body that
is not valid JSON matches nothing.

This is GJSON's path syntax (tidwall/gjson SYNTAX.md) evaluated on the decoded document, with
GJSON's rules for what matches; the PyPI ``gjson`` package is not used (GPL-3.0, and its queries
compare with Python's operators, not GJSON's). Covered, section by section:

- Path structure, Basic: ``.``-separated keys, array indexes (``children.0``).
- Wildcards: ``*`` and ``?`` in a key; the first key in document order that matches.
- Escape character: ``\\`` makes the next character literal (``fav\\.movie``).
- Arrays: ``#`` (the length), ``#.path`` (the path on every element, the values found).
- Queries: ``#(...)`` (first match) and ``#(...)#`` (all matches), the legacy ``#[...]``;
  ``==`` (or ``=``), ``!=``, ``<``, ``<=``, ``>``, ``>=`` on strings (byte order), numbers and
  booleans as GJSON orders them; ``%`` and ``!%`` patterns (``*``, ``?``, ``\\``); a query
  without a path for arrays of non-objects (``#(%"*a*")``), one without an operator (the path
  exists), nested queries, and the ``~`` value forms ``~true``, ``~false``, ``~null``, ``~*``.
- Dot vs Pipe: after ``#`` or ``#(...)#``, ``.`` goes on element by element and ``|`` acts
  on the array found.
- Modifiers: ``@this`` and ``@reverse`` (KServe users write ``[@this].#(field=="x")`` to test
  a field of the request object). GJSON's other modifiers (``@keys``, ``@flatten``...) and
  modifier arguments are refused; an ``@name`` GJSON does not know is a plain key, as in GJSON.
- Multipaths: ``[a,b]`` and ``{a,"name":b}``, keyed as GJSON keys them.
- Not covered: literals (``!true``) and the JSON Lines prefix ``..``. A condition using
  something not covered is refused when it is compiled (:class:`ConditionError`), never
  silently read another way.

A condition is at most :data:`MAX_CONDITION_LENGTH` characters with at most
:data:`MAX_ARRAY_OPERATIONS` ``#`` operations and multipaths, nested ones included; the parser
makes one pass, and evaluation visits each value of the document a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from modelhost.control.gjson_values import MISSING, WildcardPattern, compare
from modelhost.errors import InvalidInput

__all__ = [
    "MAX_ARRAY_OPERATIONS",
    "MAX_CONDITION_LENGTH",
    "MISSING",
    "Condition",
    "ConditionError",
    "compile_condition",
    "gjson_get",
]

MAX_CONDITION_LENGTH: Final = 4096
# ``#``, ``#.``, ``#(...)``, ``#(...)#`` and multipaths each nest one evaluation in another.
MAX_ARRAY_OPERATIONS: Final = 32

_QUERY_OPERATORS: Final = ("==", "=", "!=", "<", "<=", ">", ">=", "%", "!%")
# The modifiers evaluated here; the others GJSON knows are refused, any other @name is a key.
_SUPPORTED_MODIFIERS: Final = frozenset({"this", "reverse"})
_GJSON_MODIFIERS: Final = frozenset(
    {
        "dig",
        "flatten",
        "fromstr",
        "group",
        "join",
        "keys",
        "pretty",
        "tostr",
        "ugly",
        "valid",
        "values",
    }
)
# A multipath member without a name is keyed by its path's last part, or "_" unless simple.
_NOT_SIMPLE: Final = frozenset("[]{}()#|!")


class ConditionError(InvalidInput):
    """A condition that is not GJSON this module evaluates: says what and where."""

    def __init__(self, condition: str, reason: str) -> None:
        shown = condition if len(condition) <= 80 else condition[:77] + "..."
        super().__init__(f"condition {shown!r}: {reason}")
        self.condition = condition


# -- the compiled path -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """An object key (``name``; ``pattern`` when it has wildcards), or an index on arrays."""

    name: str
    pattern: WildcardPattern | None
    pipe: bool


@dataclass(frozen=True)
class _Count:
    """``#`` with nothing after it in its scope: the array's length."""

    pipe: bool
    raw: str = "#"


@dataclass(frozen=True)
class _Each:
    """``#.``: the rest of the scope on every element."""

    pipe: bool
    raw: str = "#"


@dataclass(frozen=True)
class _Query:
    """``#(path op value)``, the first match, or with ``all`` (``#(...)#``) every match."""

    path: tuple[_Component, ...] | None
    operator: str
    value: str
    pattern: WildcardPattern | None
    all: bool
    raw: str
    pipe: bool


@dataclass(frozen=True)
class _Modifier:
    """``@this`` (the value itself) or ``@reverse`` (an array's or object's order reversed)."""

    name: str
    pipe: bool


@dataclass(frozen=True)
class _Multipath:
    """``[a,b]`` (an array) or ``{a,"k":b}`` (an object) of what each path finds."""

    is_object: bool
    selectors: tuple[tuple[str, tuple[_Component, ...]], ...]
    pipe: bool


_Component = _Key | _Count | _Each | _Query | _Modifier | _Multipath


@dataclass(frozen=True)
class Condition:
    """A compiled condition: :meth:`select` what it finds, :meth:`matches` whether it finds."""

    text: str
    _components: tuple[_Component, ...]

    def select(self, document: Any) -> Any:
        """The value the path finds in a decoded JSON document, or :data:`MISSING`."""
        return _evaluate(self._components, document)

    def matches(self, document: Any) -> bool:
        """Whether the path finds a value (GJSON's ``Exists()``) in a decoded document."""
        return self.select(document) is not MISSING

    def matches_json(self, body: bytes | str) -> bool:
        """Whether the path finds a value in a JSON body; a body that is not JSON never does."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return self.matches(document)


def compile_condition(text: str) -> Condition:
    """Parse a GJSON path once; :class:`ConditionError` says what it does not accept."""
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionError(text, f"longer than {MAX_CONDITION_LENGTH} characters")
    parser = _Parser(text)
    components = parser.parse_path(text, depth=0)
    return Condition(text, components)


def gjson_get(document: Any, path: str) -> Any:
    """The value a GJSON path finds in a decoded document, or :data:`MISSING`."""
    return compile_condition(path).select(document)


class _Parser:
    """One pass over the path text; counts ``#`` operations and multipaths, nested ones too."""

    def __init__(self, condition: str) -> None:
        self._condition = condition
        self._array_operations = 0

    def _error(self, reason: str) -> ConditionError:
        return ConditionError(self._condition, reason)

    def _count_array_operation(self) -> None:
        self._array_operations += 1
        if self._array_operations > MAX_ARRAY_OPERATIONS:
            raise self._error(f"more than {MAX_ARRAY_OPERATIONS} '#' operations")

    def parse_path(self, path: str, depth: int) -> tuple[_Component, ...]:
        if path.startswith(".."):
            raise self._error("GJSON's JSON Lines prefix '..' is not supported")
        if path.startswith("!") and len(path) > 1:
            raise self._error("GJSON literals (!...) are not supported")
        components: list[_Component] = []
        index = 0
        pipe = False
        while True:
            lead = path[index : index + 1]
            if lead == "#":
                index = self._parse_array_operation(path, index, pipe, components, depth)
            elif lead == "@":
                index = self._parse_modifier(path, index, pipe, components)
            elif lead in ("[", "{"):
                index = self._parse_multipath(path, index, pipe, components, depth)
            else:
                index = self._parse_key(path, index, pipe, components)
            if index >= len(path):
                return tuple(components)
            pipe = path[index] == "|"
            index += 1

    def _parse_key(self, path: str, index: int, pipe: bool, components: list[_Component]) -> int:
        name: list[str] = []
        raw: list[str] = []
        wild = False
        while index < len(path):
            char = path[index]
            if char in ".|":
                break
            if char == "\\":
                index += 1
                if index < len(path):
                    name.append(path[index])
                    raw.append("\\" + path[index])
                index += 1
                continue
            if char in "*?":
                wild = True
            name.append(char)
            raw.append(char)
            index += 1
        pattern = WildcardPattern("".join(raw)) if wild else None
        components.append(_Key("".join(name), pattern, pipe))
        return index

    def _parse_modifier(
        self, path: str, index: int, pipe: bool, components: list[_Component]
    ) -> int:
        end = index + 1
        while end < len(path) and path[end] not in ".|:":
            end += 1
        name = path[index + 1 : end]
        if name in _SUPPORTED_MODIFIERS:
            if path.startswith(":", end):
                raise self._error(f"the @{name} modifier takes no arguments")
            components.append(_Modifier(name, pipe))
            return end
        if name in _GJSON_MODIFIERS:
            raise self._error(f"the GJSON modifier @{name} is not supported")
        # Not a modifier GJSON knows: GJSON reads it as a plain key, and so does this.
        return self._parse_key(path, index, pipe, components)

    def _parse_multipath(
        self, path: str, start: int, pipe: bool, components: list[_Component], depth: int
    ) -> int:
        self._count_array_operation()
        if depth >= MAX_ARRAY_OPERATIONS:
            raise self._error("multipaths nested too deeply")
        selectors: list[tuple[str, str]] = []
        nesting = 1
        colon = 0
        begin = start + 1
        modifier = False
        index = start + 1

        def push() -> None:
            if colon:
                selectors.append((path[begin:colon], path[colon + 1 : index]))
            else:
                selectors.append(("", path[begin:index]))

        while index < len(path):
            char = path[index]
            if char == "\\":
                index += 1
            elif char == "@" and path[index - 1] in ".|":
                modifier = True
            elif char == ":" and not modifier and not colon and nesting == 1:
                colon = index
            elif char == "," and nesting == 1:
                push()
                colon, begin, modifier = 0, index + 1, False
            elif char == '"':
                index += 1
                while index < len(path) and path[index] != '"':
                    if path[index] == "\\":
                        index += 1
                    index += 1
            elif char in "[({":
                nesting += 1
            elif char in "])}":
                nesting -= 1
                if nesting == 0:
                    push()
                    break
            index += 1
        if nesting:
            raise self._error(f"the multipath at character {start + 1} is not closed")
        index += 1
        if index < len(path) and path[index] not in ".|":
            raise self._error(f"unexpected {path[index]!r} after the multipath")
        is_object = path[start] == "{"
        compiled = tuple(
            (
                _selector_name(name, selector) if is_object else "",
                self.parse_path(selector, depth + 1),
            )
            for name, selector in selectors
        )
        components.append(_Multipath(is_object, compiled, pipe))
        return index

    def _parse_array_operation(
        self, path: str, index: int, pipe: bool, components: list[_Component], depth: int
    ) -> int:
        after = path[index + 1 : index + 2]
        if after in ("(", "["):
            self._count_array_operation()
            return self._parse_query(path, index, pipe, components, depth)
        if after in ("", ".", "|"):
            self._count_array_operation()
            # ``#.`` maps the rest of the scope; ``#`` ending its scope counts.
            components.append(_Each(pipe) if after == "." else _Count(pipe))
            return index + 1
        # ``#abc`` is a plain key: it finds nothing in an array, and the key in an object.
        return self._parse_key(path, index, pipe, components)

    def _parse_query(
        self, path: str, start: int, pipe: bool, components: list[_Component], depth: int
    ) -> int:
        if depth >= MAX_ARRAY_OPERATIONS:
            raise self._error("queries nested too deeply")
        index = start + 2
        nesting = 1
        operator_at = 0
        escaped_string = False
        while index < len(path):
            char = path[index]
            if nesting == 1 and operator_at == 0 and char in "!=<>%":
                operator_at = index
                index += 1
                continue
            if char == "\\":
                index += 1
            elif char in "([":
                nesting += 1
            elif char in ")]":
                nesting -= 1
                if nesting == 0:
                    break
            elif char == '"':
                index += 1
                while index < len(path) and path[index] != '"':
                    if path[index] == "\\":
                        escaped_string = True
                        index += 1
                    index += 1
            index += 1
        if nesting:
            raise self._error(f"the query at character {start + 1} is not closed")
        close = index
        if operator_at:
            query_path = path[start + 2 : operator_at].strip()
            operator, value = _split_operator(path[operator_at:close].strip())
            if operator not in _QUERY_OPERATORS:
                raise self._error(f"unknown query operator {operator!r}")
            value = _unquote(value, escaped_string)
        else:
            query_path = path[start + 2 : close].strip()
            operator, value = "", ""
        index = close + 1
        every = path.startswith("#", index)
        if every:
            index += 1
        if index < len(path) and path[index] not in ".|":
            raise self._error(f"unexpected {path[index]!r} after the query")
        sub_path = self.parse_path(query_path, depth + 1) if query_path else None
        pattern = WildcardPattern(value) if operator in ("%", "!%") else None
        raw = path[start:index]
        components.append(_Query(sub_path, operator, value, pattern, every, raw, pipe))
        return index


def _selector_name(name: str, selector: str) -> str:
    """A ``{...}`` member's key: its given name (a JSON string or bare), else GJSON's default."""
    if name:
        if name.startswith('"'):
            try:
                decoded = orjson.loads(name)
            except orjson.JSONDecodeError:
                return name
            return decoded if isinstance(decoded, str) else name
        return name
    last = selector
    for index in range(len(selector) - 1, -1, -1):
        if selector[index] in ".|" and (index == 0 or selector[index - 1] != "\\"):
            last = selector[index + 1 :]
            break
    if any(char < " " or char in _NOT_SIMPLE for char in last):
        return "_"
    return last


def _split_operator(text: str) -> tuple[str, str]:
    """GJSON's operator sizes: two characters for ``!=``, ``!%``, ``<=``, ``>=``, ``==``."""
    if text[:2] in ("!=", "!%", "<=", ">="):
        return text[:2], text[2:].strip()
    if text[:2] == "==":
        return "=", text[2:].strip()
    if text[:1] in ("<", ">", "=", "%"):
        return text[:1], text[1:].strip()
    return text[:1], text[1:].strip()


def _unquote(value: str, escaped: bool) -> str:
    # As GJSON: only a quoted value longer than its quotes is unquoted (``""`` stays two
    # quote characters), and unescaped only when the query had a backslash in a string.
    if len(value) > 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if not escaped:
            return inner
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return inner
        return decoded if isinstance(decoded, str) else inner
    return value


# -- evaluation ------------------------------------------------------------------------------


def _evaluate(components: Sequence[_Component], value: Any) -> Any:
    index = 0
    while index < len(components):
        if value is MISSING:
            return MISSING
        component = components[index]
        if isinstance(component, _Key):
            value = _key(value, component)
            index += 1
        elif isinstance(component, _Modifier):
            value = _modify(component.name, value)
            index += 1
        elif isinstance(component, _Multipath):
            value = _multipath(component, value)
            index += 1
        elif not isinstance(value, list):
            # Outside an array GJSON reads ``#`` and ``#(...)`` as plain keys.
            value = value.get(component.raw, MISSING) if isinstance(value, dict) else MISSING
            index += 1
        elif isinstance(component, _Count):
            value = len(value)
            index += 1
        elif isinstance(component, _Query) and not component.all:
            value = next((e for e in value if _query_matches(component, e)), MISSING)
            index += 1
        else:
            end = _scope_end(components, index + 1)
            scope = components[index + 1 : end]
            elements = value
            if isinstance(component, _Query):
                elements = [e for e in value if _query_matches(component, e)]
            value = [
                found
                for found in (_evaluate(scope, element) for element in elements)
                if found is not MISSING
            ]
            index = end
    return value


def _scope_end(components: Sequence[_Component], start: int) -> int:
    """Where the element-by-element scope of ``#.`` or ``#(...)#`` ends: the next ``|``."""
    for index in range(start, len(components)):
        if components[index].pipe:
            return index
    return len(components)


def _modify(name: str, value: Any) -> Any:
    if name == "reverse":
        if isinstance(value, list):
            return value[::-1]
        if isinstance(value, dict):
            return dict(reversed(value.items()))
    return value


def _multipath(multipath: _Multipath, value: Any) -> Any:
    found = ((name, _evaluate(components, value)) for name, components in multipath.selectors)
    present = [(name, item) for name, item in found if item is not MISSING]
    if multipath.is_object:
        return dict(present)
    return [item for _, item in present]


def _key(value: Any, key: _Key) -> Any:
    if isinstance(value, dict):
        if key.pattern is None:
            return value.get(key.name, MISSING)
        for name, item in value.items():
            if key.pattern.matches(name):
                return item
        return MISSING
    if isinstance(value, list):
        name = key.name
        if name.isascii() and name.isdigit():
            position = int(name)
            return value[position] if position < len(value) else MISSING
        return MISSING
    return MISSING


def _query_matches(query: _Query, element: Any) -> bool:
    if query.path is not None:
        # A path inside a query reads objects and arrays; a scalar element has no fields.
        if not isinstance(element, (dict, list)):
            return False
        return _matches_query(query, _evaluate(query.path, element))
    if isinstance(element, dict):
        return _matches_query(query, element.get("", MISSING))  # GJSON's empty key
    if isinstance(element, list):
        return _matches_query(query, MISSING)
    return _matches_query(query, element)


def _matches_query(query: _Query, value: Any) -> bool:
    return compare(query.operator, query.value, query.pattern, value)
