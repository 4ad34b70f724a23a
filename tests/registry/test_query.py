"""The filterQuery grammar and the pages, on resources as the API shows them."""

from __future__ import annotations

from typing import Any

import pytest

from modelhost import errors
from modelhost.registry.query import page, parse_filter

PROPERTIES = frozenset({"id", "name", "state", "createTimeSinceEpoch"})


def _resource(number: int, name: str, **custom: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(number),
        "name": name,
        "state": "LIVE",
        "createTimeSinceEpoch": str(1000 - number),
        "lastUpdateTimeSinceEpoch": str(1000 - number),
        "customProperties": custom,
    }


RESOURCES = [
    _resource(1, "a", n={"metadataType": "MetadataIntValue", "int_value": "5"}),
    _resource(2, "b", n={"metadataType": "MetadataIntValue", "int_value": "50"}),
    _resource(3, "c", flag={"metadataType": "MetadataBoolValue", "bool_value": True}),
]


def _names(query: str) -> list[str]:
    predicate = parse_filter(query, PROPERTIES)
    return [r["name"] for r in RESOURCES if predicate(r)]


def test_custom_ints_compare_as_numbers_not_strings() -> None:
    assert _names("n.int_value > 10") == ["b"]
    assert _names("n > 10") == ["b"]
    assert _names("n.string_value = '5'") == []


def test_booleans_keywords_and_precedence() -> None:
    assert _names("flag = TRUE") == ["c"]
    assert _names("flag.bool_value = false") == []
    # AND binds tighter than OR.
    assert _names("name = 'a' OR name = 'b' AND id = '1'") == ["a"]
    assert _names("name NOT IN ('a', 'b')") == ["c"]
    assert _names("  ") == ["a", "b", "c"]


@pytest.mark.parametrize("query", ["name", "name = 'a' name = 'b'", "= 'a'", "name IN 'a'"])
def test_malformed_queries_are_invalid_input(query: str) -> None:
    with pytest.raises(errors.InvalidInput):
        parse_filter(query, PROPERTIES)


def test_pages_follow_the_cursor_in_either_order() -> None:
    first = page(RESOURCES, "CREATE_TIME", "ASC", 2, None)
    assert [r["name"] for r in first.items] == ["c", "b"]
    assert first.next_page_token
    second = page(RESOURCES, "CREATE_TIME", "ASC", 2, first.next_page_token)
    assert [r["name"] for r in second.items] == ["a"]
    assert second.next_page_token == ""
    descending = page(RESOURCES, "ID", "DESC", 1, None)
    following = page(RESOURCES, "ID", "DESC", 5, descending.next_page_token)
    assert [r["name"] for r in descending.items + following.items] == ["c", "b", "a"]
    with pytest.raises(errors.InvalidInput):
        page(RESOURCES, "NAME", "ASC", 1, first.next_page_token)  # another order's token
    with pytest.raises(errors.InvalidInput):
        page(RESOURCES, "SIZE", None, 1, None)
