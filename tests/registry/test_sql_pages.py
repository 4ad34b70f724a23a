"""Pages cut in SQL answer what pages cut in Python answer, token for token.

A list with no filterQuery, or with ``p = 'v'`` terms, in id or time order, is filtered,
ordered and cut by the database; any other is filtered in Python. The same list asked both
ways (an ``OR`` of a term with itself keeps it in Python) must give the same items, pages and
tokens, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelhost import errors
from modelhost.registry import RegistryService, RegistryStore
from modelhost.registry.query import equalities
from modelhost.registry.service import ListRequest


@pytest.fixture
def service(database_url: str) -> Iterator[RegistryService]:
    store = RegistryStore(database_url)
    registry = RegistryService(store)
    model = registry.create("registered_model", {"name": "iris"})
    for number in range(23):
        state = "ARCHIVED" if number % 3 == 0 else "LIVE"
        body = {"name": f"v{number}", "registeredModelId": str(model.id), "state": state}
        version = registry.create("model_version", body)
        if number % 4 == 0:  # some updated after: LAST_UPDATE_TIME differs from creation order
            registry.update("model_version", str(version.id), {"description": "retrained"})
    yield registry
    store.close()


def _pages(
    service: RegistryService, filter_query: str | None, **options: str | None
) -> list[tuple[list[str], str]]:
    pages = []
    token: str | None = None
    while True:
        request = ListRequest(
            filter_query=filter_query, page_size=5, next_page_token=token, **options
        )
        page = service.list_page("model_version", request, parent_id=1)
        pages.append(([item["name"] for item in page["items"]], page["nextPageToken"]))
        token = page["nextPageToken"]
        if not token:
            return pages


@pytest.mark.parametrize(
    ("in_sql", "in_python"),
    [
        (None, "id > 0"),
        ("state = 'LIVE'", "state = 'LIVE' OR state = 'LIVE'"),
        ("state = 'LIVE' AND name = 'v4'", "(state = 'LIVE' AND name = 'v4') OR name = 'none'"),
    ],
)
@pytest.mark.parametrize(
    "order", [(None, None), ("CREATE_TIME", "DESC"), ("LAST_UPDATE_TIME", "ASC"), ("ID", "DESC")]
)
def test_sql_and_python_pages_agree(
    service: RegistryService,
    in_sql: str | None,
    in_python: str,
    order: tuple[str | None, str | None],
) -> None:
    options = {"order_by": order[0], "sort_order": order[1]}
    expected = _pages(service, in_python, **options)
    assert _pages(service, in_sql, **options) == expected
    assert sum(len(names) for names, _ in expected) >= 1


def test_a_token_from_one_path_serves_the_other(service: RegistryService) -> None:
    first = service.list_page("model_version", ListRequest(page_size=4), parent_id=1)
    token = first["nextPageToken"]
    by_sql = service.list_page(
        "model_version", ListRequest(page_size=4, next_page_token=token), parent_id=1
    )
    by_python = service.list_page(
        "model_version",
        ListRequest(filter_query="id > 0", page_size=4, next_page_token=token),
        parent_id=1,
    )
    assert by_sql["items"] == by_python["items"]
    assert [item["name"] for item in by_sql["items"]] == ["v4", "v5", "v6", "v7"]


def test_a_time_token_is_refused_for_a_name_order(service: RegistryService) -> None:
    newest = ListRequest(page_size=2, order_by="CREATE_TIME", sort_order="DESC")
    token = service.list_page("model_version", newest, parent_id=1)["nextPageToken"]
    with pytest.raises(errors.InvalidInput, match="another orderBy"):
        service.list_page(
            "model_version",
            ListRequest(page_size=2, order_by="NAME", next_page_token=token),
            parent_id=1,
        )
    by_name = ListRequest(page_size=2, order_by="NAME")
    name_token = service.list_page("model_version", by_name, parent_id=1)["nextPageToken"]
    with pytest.raises(errors.InvalidInput, match="another orderBy"):
        service.list_page(
            "model_version", ListRequest(page_size=2, next_page_token=name_token), parent_id=1
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("state = 'LIVE'", {"state": "LIVE"}),
        ("state = \"LIVE\" and name = 'v1'", {"state": "LIVE", "name": "v1"}),
        ("state = 'LIVE' AND", None),
        ("state = 'LIVE' OR name = 'v1'", None),
        ("state != 'LIVE'", None),
        ("accuracy = '1'", None),  # a custom property: Python reads those
        ("state = 1", None),
        ("state = 'A' AND state = 'B'", None),
        ("(state = 'LIVE')", None),
    ],
)
def test_which_queries_sql_filters(query: str, expected: dict[str, str] | None) -> None:
    assert equalities(query, frozenset({"state", "name"})) == expected
