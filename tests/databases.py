"""Test databases: a migrated SQLite file and, when reachable, a fresh PostgreSQL database.

Under CI=true a missing PostgreSQL fails the run instead of skipping its tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from aidmatch import migrate
from aidmatch.database import make_engine
from aidmatch.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "AIDMATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_unavailable() -> str | None:
    """None when the test PostgreSQL answers, else why not."""
    engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver or network error means "not here"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    why = postgres_unavailable()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {why}")
    pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {why}")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new empty PostgreSQL database, dropped afterwards."""
    require_postgres()
    name = f"aidmatch_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield str(make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def migrated_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """A database of the backend migrated to head; yields its URL."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_dir / 'aidmatch-test.db'}"
        migrate.upgrade(url)
        yield url
    elif backend == "postgresql":
        with fresh_postgres_database() as url:
            migrate.upgrade(url)
            yield url
    else:
        raise ValueError(backend)


def empty_all_tables(url: str) -> None:
    """Delete every row (children first) so the next test starts from a clean schema."""
    engine = make_engine(url)
    try:
        names = [t.name for t in reversed(Base.metadata.sorted_tables)]
        with engine.begin() as conn:
            present = set(inspect(conn).get_table_names())
            names = [n for n in names if n in present]
            if conn.dialect.name == "postgresql":
                conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " RESTART IDENTITY CASCADE"))
            else:
                for n in names:
                    conn.execute(text(f'DELETE FROM "{n}"'))
    finally:
        engine.dispose()
