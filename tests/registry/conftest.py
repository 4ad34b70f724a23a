"""The registry tests' databases: an SQLite file, and PostgreSQL where a cluster can run."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_support import new_database, postgres_cluster, postgres_unavailable

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    """One throw-away PostgreSQL cluster for the session (skipped where none can run)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite")
    base: str = request.getfixturevalue("postgres_base")
    return new_database(base, f"registry_{next(_databases)}")
