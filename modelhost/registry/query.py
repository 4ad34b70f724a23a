"""A list's filterQuery, order and pages: the registry's SQL-like filter grammar, evaluated.

The grammar is the part of Kubeflow Model Registry's ``filterQuery`` that clients write:
comparisons (``=``, ``!=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``), ``LIKE`` and ``ILIKE``
with ``%`` and ``_``, ``IN (...)``, ``AND``, ``OR``, ``NOT`` and parentheses; strings in single
or double quotes, numbers, ``true``/``false``. A name is a resource's own property (``name``,
``state``, ``id``, ``createTimeSinceEpoch``...) or else a custom property; ``x.string_value``
(``int_value``, ``double_value``, ``bool_value``) reads custom property ``x`` of that type, and
backticks quote a name with dots or dashes in it. A query is parsed once into a predicate
over a resource as the API shows it; a query it cannot parse is the client's error (400).

Pages are cut after a cursor (the last item's sort key and id), so a page token stays right
when resources are added between two calls.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from modelhost import errors

__all__ = [
    "ORDER_FIELDS",
    "Page",
    "Predicate",
    "cursor",
    "equalities",
    "order",
    "page",
    "page_token",
    "parse_filter",
]

Predicate = Callable[[Mapping[str, Any]], bool]
ORDER_FIELDS = ("ID", "NAME", "CREATE_TIME", "LAST_UPDATE_TIME")
_TYPED_VALUES = ("string_value", "int_value", "double_value", "bool_value")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<quoted>`[^`]+`)
      | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,|\.)
      | (?P<word>[A-Za-z_][A-Za-z0-9_\-]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"AND", "OR", "NOT", "LIKE", "ILIKE", "IN", "TRUE", "FALSE"})
_COMPARISONS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">="})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, number, name, op, keyword
    text: str
    value: object


def _tokens(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(query):
        if query[position:].strip() == "":
            break
        match = _TOKEN.match(query, position)
        if match is None:
            raise errors.InvalidInput(f"filterQuery: cannot read {query[position:]!r}.")
        position = match.end()
        kind = match.lastgroup or ""
        text = match.group(kind)
        if kind == "string":
            tokens.append(_Token("string", text, re.sub(r"\\(.)", r"\1", text[1:-1])))
        elif kind == "number":
            number = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(_Token("number", text, number))
        elif kind == "quoted":
            tokens.append(_Token("name", text, text[1:-1]))
        elif kind == "word" and text.upper() in _KEYWORDS:
            upper = text.upper()
            tokens.append(
                _Token("keyword", upper, upper == "TRUE" if upper in ("TRUE", "FALSE") else None)
            )
        elif kind == "word":
            tokens.append(_Token("name", text, text))
        else:
            tokens.append(_Token("op", text, None))
    return tokens


class _Parser:
    """Recursive descent over the tokens: OR of ANDs of (NOT) comparisons."""

    def __init__(self, query: str, properties: frozenset[str]) -> None:
        self.tokens = _tokens(query)
        self.at = 0
        self.properties = properties

    def parse(self) -> Predicate:
        if not self.tokens:
            return _always
        predicate = self._or()
        if self.at != len(self.tokens):
            raise errors.InvalidInput(f"filterQuery: unexpected {self.tokens[self.at].text!r}.")
        return predicate

    def _peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise errors.InvalidInput("filterQuery ends too early.")
        self.at += 1
        return token

    def _accept(self, text: str) -> bool:
        token = self._peek()
        if token is not None and token.kind in ("op", "keyword") and token.text == text:
            self.at += 1
            return True
        return False

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._accept("OR"):
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def _and(self) -> Predicate:
        terms = [self._not()]
        while self._accept("AND"):
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def _not(self) -> Predicate:
        if self._accept("NOT"):
            inner = self._not()
            return lambda r: not inner(r)
        if self._accept("("):
            inner = self._or()
            if not self._accept(")"):
                raise errors.InvalidInput("filterQuery: a '(' is not closed.")
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        read = self._operand_reader()
        token = self._take()
        negate = False
        if token.text == "NOT" and token.kind == "keyword":
            negate = True
            token = self._take()
        if token.kind == "keyword" and token.text in ("LIKE", "ILIKE"):
            pattern = self._literal()
            if not isinstance(pattern, str):
                raise errors.InvalidInput(f"filterQuery: {token.text} takes a string.")
            matcher = _like(pattern, token.text == "ILIKE")

            def test(r: Mapping[str, Any]) -> bool:
                value = read(r)
                return isinstance(value, str) and bool(matcher(value))

        elif token.kind == "keyword" and token.text == "IN":
            values = self._list()

            def test(r: Mapping[str, Any]) -> bool:
                value = read(r)
                return any(_compare(value, "=", v) for v in values)

        elif token.kind == "op" and token.text in _COMPARISONS and not negate:
            operator, literal = token.text, self._literal()

            def test(r: Mapping[str, Any]) -> bool:
                return _compare(read(r), operator, literal)

        else:
            raise errors.InvalidInput(f"filterQuery: expected a comparison, not {token.text!r}.")
        return (lambda r: not test(r)) if negate else test

    def _operand_reader(self) -> Callable[[Mapping[str, Any]], object]:
        token = self._take()
        if token.kind != "name":
            raise errors.InvalidInput(f"filterQuery: expected a property name, not {token.text!r}.")
        name = str(token.value)
        typed: str | None = None
        if self._accept("."):
            suffix = self._take()
            if suffix.kind != "name" or suffix.text not in _TYPED_VALUES:
                raise errors.InvalidInput(
                    f"filterQuery: after {name}. comes one of {', '.join(_TYPED_VALUES)}."
                )
            typed = suffix.text
        if typed is None and name in self.properties:
            return lambda r: r.get(name)
        return lambda r: _custom_value(r, name, typed)

    def _literal(self) -> object:
        token = self._take()
        if token.kind in ("string", "number") or (
            token.kind == "keyword" and token.value is not None
        ):
            return token.value
        raise errors.InvalidInput(f"filterQuery: expected a value, not {token.text!r}.")

    def _list(self) -> list[object]:
        if not self._accept("("):
            raise errors.InvalidInput("filterQuery: IN takes a list in parentheses.")
        values = [self._literal()]
        while self._accept(","):
            values.append(self._literal())
        if not self._accept(")"):
            raise errors.InvalidInput("filterQuery: the IN list is not closed.")
        return values


def parse_filter(query: str | None, properties: frozenset[str]) -> Predicate:
    """The predicate of ``query`` over resources whose own property names are ``properties``."""
    if not query or not query.strip():
        return _always
    return _Parser(query, properties).parse()


def _always(resource: Mapping[str, Any]) -> bool:
    return True


def equalities(query: str | None, properties: frozenset[str]) -> dict[str, str] | None:
    """``{property: value}`` when ``query`` is only ``p = 'v'`` terms joined by AND, each ``p``
    one of ``properties``; None for any other query (the store can filter those in SQL)."""
    if not query or not query.strip():
        return {}
    tokens = _tokens(query)
    found: dict[str, str] = {}
    for at in range(0, len(tokens), 4):
        term = tokens[at : at + 3]
        joiner = tokens[at + 3] if at + 3 < len(tokens) else None
        if len(term) < 3 or (joiner is not None and joiner.text != "AND"):
            return None
        name, operator, literal = term
        simple = (
            name.kind == "name"
            and name.value in properties
            and operator.kind == "op"
            and operator.text == "="
            and literal.kind == "string"
        )
        if not simple or str(name.value) in found:
            return None
        found[str(name.value)] = str(literal.value)
    if tokens and tokens[-1].kind == "keyword" and tokens[-1].text == "AND":
        return None
    return found


def _custom_value(resource: Mapping[str, Any], name: str, typed: str | None) -> object:
    value = (resource.get("customProperties") or {}).get(name)
    if not isinstance(value, dict):
        return None
    keys = [typed] if typed is not None else list(_TYPED_VALUES)
    for key in keys:
        if key in value:
            found = value[key]
            return int(found) if key == "int_value" else found
    return None


def _compare(left: object, operator: str, right: object) -> bool:
    if left is None:
        return False
    left, right = _comparable(left, right)
    try:
        if operator == "=":
            return left == right
        if operator in ("!=", "<>"):
            return left != right
        if operator == "<":
            return bool(left < right)  # type: ignore[operator]
        if operator == "<=":
            return bool(left <= right)  # type: ignore[operator]
        if operator == ">":
            return bool(left > right)  # type: ignore[operator]
        return bool(left >= right)  # type: ignore[operator]
    except TypeError:
        return False  # a string against a number: no resource matches


def _comparable(left: object, right: object) -> tuple[object, object]:
    # Ids and times are strings of digits in the API; a number compares them as numbers.
    numeric = (int, float)
    if isinstance(right, numeric) and not isinstance(right, bool) and isinstance(left, str):
        try:
            return float(left), right
        except ValueError:
            return left, right
    if isinstance(left, bool) and isinstance(right, str):
        return str(left).lower(), right.lower()
    return left, right


def _like(pattern: str, fold: bool) -> Callable[[str], object]:
    parts = []
    for char in pattern:
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0)).fullmatch


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, and the token of the next (empty on the last page)."""

    items: list[dict[str, Any]]
    next_page_token: str


def page(
    resources: Sequence[dict[str, Any]],
    order_by: str | None,
    sort_order: str | None,
    size: int,
    token: str | None,
) -> Page:
    """The page of ``resources`` (already filtered) that ``token`` starts, ``size`` long."""
    field_name, descending = order(order_by, sort_order)

    def key(resource: Mapping[str, Any]) -> tuple[Any, int]:
        return _sort_key(resource, field_name), int(resource["id"])

    ordered = sorted(resources, key=key, reverse=descending)
    if token:
        after = cursor(token)
        try:
            ordered = [r for r in ordered if (key(r) < after if descending else key(r) > after)]
        except TypeError:
            raise errors.InvalidInput("nextPageToken belongs to another orderBy.") from None
    items = ordered[:size]
    more = len(ordered) > size
    next_token = _token(key(items[-1])) if more and items else ""
    return Page(items, next_token)


def order(order_by: str | None, sort_order: str | None) -> tuple[str, bool]:
    """The ``orderBy`` field (one of :data:`ORDER_FIELDS`) and whether it is descending."""
    field_name = (order_by or "ID").upper()
    if field_name not in ORDER_FIELDS:
        raise errors.InvalidInput(f"orderBy must be one of {', '.join(ORDER_FIELDS)}.")
    direction = (sort_order or "ASC").upper()
    if direction not in ("ASC", "DESC"):
        raise errors.InvalidInput("sortOrder must be ASC or DESC.")
    return field_name, direction == "DESC"


def page_token(resource: Mapping[str, Any], field_name: str) -> str:
    """The token of the page after ``resource`` in ``field_name`` order."""
    return _token((_sort_key(resource, field_name), int(resource["id"])))


def _sort_key(resource: Mapping[str, Any], field_name: str) -> Any:
    if field_name == "NAME":
        return str(resource.get("name") or "")
    if field_name == "CREATE_TIME":
        return int(resource["createTimeSinceEpoch"])
    if field_name == "LAST_UPDATE_TIME":
        return int(resource["lastUpdateTimeSinceEpoch"])
    return int(resource["id"])


def _token(cursor: tuple[Any, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(cursor))).decode("ascii")


def cursor(token: str) -> tuple[Any, int]:
    """The sort key and id a page token holds; the client's error if it is not one."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError, ValueError):
        raise errors.InvalidInput("nextPageToken is not one this registry gave.") from None
    valid = (
        isinstance(decoded, list)
        and len(decoded) == 2
        and isinstance(decoded[0], (int, str))
        and isinstance(decoded[1], int)
    )
    if not valid:
        raise errors.InvalidInput("nextPageToken is not one this registry gave.")
    return decoded[0], decoded[1]
