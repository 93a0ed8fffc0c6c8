"""Fixtures shared by every tier: the database backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import empty_all_tables, migrated_database

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database per backend, shared by the session."""
    tmp: Path = tmp_path_factory.mktemp(f"db-{request.param}")
    with migrated_database(request.param, tmp) as url:
        yield url


@pytest.fixture
def database_url(migrated_url: str) -> Iterator[str]:
    """The backend's database, emptied after each test."""
    yield migrated_url
    empty_all_tables(migrated_url)
