"""GJSON conditions: SYNTAX.md's sample document and its query table, KServe's sample
conditions, GJSON's existence rule, what is refused, and hostile input."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelhost.control.gjson import (
    MAX_ARRAY_OPERATIONS,
    MAX_CONDITION_LENGTH,
    MISSING,
    ConditionError,
    compile_condition,
    gjson_get,
)
from modelhost.control.gjson_values import WildcardPattern
from modelhost.errors import InvalidInput

# The document of tidwall/gjson's SYNTAX.md.
SYNTAX_DOCUMENT: dict[str, Any] = {
    "name": {"first": "Tom", "last": "Anderson"},
    "age": 37,
    "children": ["Sara", "Alex", "Jack"],
    "fav.movie": "Deer Hunter",
    "friends": [
        {"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]},
        {"first": "Roger", "last": "Craig", "age": 68, "nets": ["fb", "tw"]},
        {"first": "Jane", "last": "Murphy", "age": 47, "nets": ["ig", "tw"]},
    ],
}
DALE = SYNTAX_DOCUMENT["friends"][0]
ROGER = SYNTAX_DOCUMENT["friends"][1]

# SYNTAX.md's path -> value table, section by section.
SYNTAX_TABLE = [
    # Basic
    ("name.last", "Anderson"),
    ("name.first", "Tom"),
    ("age", 37),
    ("children", ["Sara", "Alex", "Jack"]),
    ("children.0", "Sara"),
    ("children.1", "Alex"),
    ("friends.1", ROGER),
    ("friends.1.first", "Roger"),
    # Wildcards
    ("child*.2", "Jack"),
    ("c?ildren.0", "Sara"),
    # Escape character
    (r"fav\.movie", "Deer Hunter"),
    # Arrays
    ("friends.#", 3),
    ("friends.#.age", [44, 68, 47]),
    # Queries
    ('friends.#(last=="Murphy").first', "Dale"),
    ('friends.#(last=="Murphy")#.first', ["Dale", "Jane"]),
    ("friends.#(age>45)#.last", ["Craig", "Murphy"]),
    ('friends.#(first%"D*").last', "Murphy"),
    ('friends.#(first!%"D*").last', "Craig"),
    ('children.#(!%"*a*")', "Alex"),
    ('children.#(%"*a*")#', ["Sara", "Jack"]),
    ('friends.#(nets.#(=="fb"))#.first', ["Dale", "Roger"]),
    # Dot vs Pipe
    ("friends.0.first", "Dale"),
    ("friends|0.first", "Dale"),
    ("friends.0|first", "Dale"),
    ("friends|0|first", "Dale"),
    ("friends|#", 3),
    ("friends.#", 3),
    ('friends.#(last="Murphy")#', [DALE, SYNTAX_DOCUMENT["friends"][2]]),
    ('friends.#(last="Murphy")#.first', ["Dale", "Jane"]),
    ('friends.#(last="Murphy")#|first', MISSING),
    ('friends.#(last="Murphy")#.0', []),
    ('friends.#(last="Murphy")#|0', DALE),
    ('friends.#(last="Murphy")#.#', []),
    ('friends.#(last="Murphy")#|#', 2),
    # Modifiers
    ("children.@reverse", ["Jack", "Alex", "Sara"]),
    ("children.@reverse.0", "Jack"),
    # Multipaths
    (
        '{name.first,age,"the_murphys":friends.#(last="Murphy")#.first}',
        {"first": "Tom", "age": 37, "the_murphys": ["Dale", "Jane"]},
    ),
]


@pytest.mark.parametrize(("path", "expected"), SYNTAX_TABLE)
def test_syntax_documents_paths_find_its_values(path: str, expected: Any) -> None:
    assert gjson_get(SYNTAX_DOCUMENT, path) == expected


def test_the_tilde_forms_read_values_as_booleans_as_syntax_md_shows() -> None:
    vals = {
        "vals": [
            {"a": 1, "b": True},
            {"a": 2, "b": True},
            {"a": 3, "b": False},
            {"a": 4, "b": "0"},
            {"a": 5, "b": 0},
            {"a": 6, "b": "1"},
            {"a": 7, "b": 1},
            {"a": 8, "b": "true"},
            {"a": 9, "b": False},
            {"a": 10, "b": None},
            {"a": 11},
        ]
    }
    assert gjson_get(vals, "vals.#(b==~true)#.a") == [1, 2, 6, 7, 8]
    # The non-existent b of 11 counts as false.
    assert gjson_get(vals, "vals.#(b==~false)#.a") == [3, 4, 5, 9, 10, 11]
    assert gjson_get(vals, "vals.#(b==~null)#.a") == [10, 11]
    assert gjson_get(vals, "vals.#(b==~*)#.a") == list(range(1, 11))
    assert gjson_get(vals, "vals.#(b!=~true)#.a") == [3, 4, 5, 9, 10, 11]


# KServe's sample Switch graph (docs/samples/graph) routes on these; its input has
# instances [{"name":"blue","intval":0,"strval":"kserve"}, {"name":"red","intval":1,...}].
KSERVE_SWITCH_INPUT = {
    "instances": [
        {"name": "blue", "intval": 0, "strval": "kserve"},
        {"name": "red", "intval": 1, "strval": "1red-server1"},
    ]
}


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ("instances.#(intval<1)", True),
        ("instances.#(intval>5)", False),
        ("instances.#(strval%*red-server*)", True),
        ('instances.#(strval%"*blue*")', False),
        ('instances.#(name=="red")', True),
        ('instances.#(name=="green")', False),
        ('instances.#(name=="green")#', True),  # [] exists: GJSON's rule, not a bug here
        ("instances.1.intval", True),
        ("instances.2", False),
        ("predictions", False),
    ],
)
def test_kserve_sample_conditions_match_as_gjson_exists(condition: str, matches: bool) -> None:
    body = orjson.dumps(KSERVE_SWITCH_INPUT)
    assert compile_condition(condition).matches_json(body) is matches


def test_a_json_null_exists_and_a_missing_key_does_not() -> None:
    condition = compile_condition("a")
    assert condition.matches({"a": None})
    assert not condition.matches({"b": 1})


def test_bodies_that_are_not_json_objects_or_arrays_match_nothing() -> None:
    condition = compile_condition("a")
    assert not condition.matches_json(b"{not json")
    assert not condition.matches_json(b"")
    assert not condition.matches_json(b'"a"')  # GJSON looks inside objects and arrays only
    assert condition.matches_json('{"a": 1}')


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("items.#(price>=10)#.id", [2, 3]),
        ("items.#(price<=10)#.id", [1, 2]),
        ("items.#(price!=10)#.id", [1, 3]),
        ("items.#(price==10.0).id", 2),
        ('items.#(price>"9").id', 2),  # the value is read as a number for a number
        ('items.#(tag<"b")#.id', [1, 3]),  # byte order: 'a"b' < 'b'
        ('items.#(tag>="b")#.id', [2]),
        ("items.#(on==true)#.id", [1]),
        ("items.#(on!=true)#.id", [2]),
        ("items.#(on<true)#.id", [2]),  # false < true, as GJSON orders them
        # GJSON answers >= only for true and <= only for false: false >= false does not match.
        ("items.#(on>=false)#.id", [1]),
        ("items.#(on<=false)#.id", [2]),
        ("items.#(on)#.id", [1, 2]),  # no operator: the path exists
        ('items.#(tag=="a\\"b")#.id', [3]),  # an escaped quote in the value
        ("items.#(missing>1)#.id", []),
        ('items.#[tag=="a"].id', 1),  # the legacy bracket form
        ("items.#(meta.size>1)#.id", [3]),
    ],
)
def test_query_operators_compare_as_gjson(path: str, expected: Any) -> None:
    document = {
        "items": [
            {"id": 1, "price": 5, "tag": "a", "on": True},
            {"id": 2, "price": 10, "tag": "b", "on": False},
            {"id": 3, "price": 20, "tag": 'a"b', "meta": {"size": 2}},
        ]
    }
    assert gjson_get(document, path) == expected


def test_escapes_wildcards_and_pattern_escapes() -> None:
    document = {"a*b": 1, "axb": 2, "x.y": {"z": 3}, "names": ["a*c", "abc"]}
    assert gjson_get(document, r"a\*b") == 1
    assert gjson_get(document, "a?b") == 1  # the first key in document order that matches
    assert gjson_get(document, r"x\.y.z") == 3
    assert gjson_get(document, r'names.#(%"a\*c")#') == ["a*c"]
    assert gjson_get(document, 'names.#(%"a?c")#') == ["a*c", "abc"]


def test_hash_and_queries_on_objects_are_plain_keys_as_in_gjson() -> None:
    assert gjson_get({"#": 5}, "#") == 5
    assert gjson_get({"a": {"b": 1}}, "a.#") is MISSING
    assert gjson_get({"a": [1, 2]}, "a.x") is MISSING
    assert gjson_get({"a": [1, 2]}, "a.5") is MISSING
    assert gjson_get({"a": 1}, "a.b") is MISSING


def test_this_and_reverse_modifiers_and_multipaths() -> None:
    # KServe's idiom for a condition on a field of the request object itself.
    request = {"model": "sklearn", "instances": [[1, 2]]}
    assert compile_condition('[@this].#(model=="sklearn")').matches(request)
    assert not compile_condition('[@this].#(model%"xgb*")').matches(request)
    assert gjson_get(SYNTAX_DOCUMENT, "[name.last,age,nothing]") == ["Anderson", 37]
    assert gjson_get(SYNTAX_DOCUMENT, "friends.[0.first,1.age]") == ["Dale", 68]
    assert gjson_get(SYNTAX_DOCUMENT, "{friends.#,x.y|z,fav\\.movie}") == {
        "_": 3,  # a last part that is not a simple name ("#") is keyed "_"
        "fav\\.movie": "Deer Hunter",  # else the path's last part, as written
    }
    assert gjson_get(SYNTAX_DOCUMENT, "name.@reverse") == {"last": "Anderson", "first": "Tom"}
    assert gjson_get(5, "[@this]") == [5]
    # An @name GJSON does not know is a key, as in GJSON.
    assert gjson_get({"@timestamp": 1}, "@timestamp") == 1


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("children.@ugly", "@ugly is not supported"),
        ('@pretty:{"sortKeys":true}', "@pretty is not supported"),
        ("@this:x", "takes no arguments"),
        ("[name,age", "not closed"),
        ("[name]x", "after the multipath"),
        ('{name.first,"company":!"Happysoft"}', "literals"),
        ('!"x"', "literals"),
        ("..#", "JSON Lines"),
        ("friends.#(age>1", "not closed"),
        ('friends.#(first=="x)', "not closed"),
        ("friends.#(age!1)", "operator"),
        ("friends.#(age>1)x", "after the query"),
    ],
)
def test_syntax_outside_the_subset_is_refused_with_a_reason(condition: str, reason: str) -> None:
    with pytest.raises(ConditionError, match=reason) as caught:
        compile_condition(condition)
    assert isinstance(caught.value, InvalidInput)  # a 400 wherever it surfaces


def test_long_and_deep_conditions_are_refused_before_any_work() -> None:
    with pytest.raises(ConditionError, match="longer than"):
        compile_condition("a" * (MAX_CONDITION_LENGTH + 1))
    nested = "a"
    for _ in range(MAX_ARRAY_OPERATIONS + 1):
        nested = f"a.#({nested})"
    with pytest.raises(ConditionError, match="'#' operations"):
        compile_condition(nested)
    with pytest.raises(ConditionError, match="'#' operations"):
        compile_condition(".".join(["#"] * (MAX_ARRAY_OPERATIONS + 1)))


@pytest.mark.timeout(10)
def test_patterns_built_to_backtrack_finish_in_linear_time() -> None:
    text = "a" * 200_000
    pattern = "*a" * 40 + "*b"
    condition = compile_condition(f'v.#(%"{pattern}")')
    start = time.perf_counter()
    assert not condition.matches({"v": [text]})
    assert time.perf_counter() - start < 2.0


def _reference_match(text: str, pattern: str) -> bool:
    # The textbook meaning of a * / ? glob (no escapes), by regular expression.
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.fullmatch("".join(parts), text, re.DOTALL) is not None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="abc", max_size=12))
def test_the_pattern_matcher_agrees_with_the_glob_definition(pattern: str, text: str) -> None:
    assert WildcardPattern(pattern).matches(text) is _reference_match(text, pattern)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab.|#()[]!=<>%"\\*?@~0 ', max_size=40))
def test_any_text_compiles_or_is_refused_and_never_breaks_evaluation(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ConditionError:
        return
    for document in (SYNTAX_DOCUMENT, [SYNTAX_DOCUMENT, 1, "a", None], {"a": [[1], {"b": []}]}):
        condition.select(document)
