"""Engine, sessions and the declarative base. Nothing here connects at import time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg.types.json import Json
from sqlalchemy import JSON, DateTime, Engine, MetaData, Table, create_engine, event, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator, UserDefinedType

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite: a write that changes nothing still takes the database's write lock, which the transaction
# then holds; a second writer waits for it (busy timeout). Any table does; this one is small.
_SQLITE_WRITE_LOCK = text("UPDATE sms_optouts SET phone = phone WHERE 0 = 1")


def write_lock(session: Session) -> None:
    """SQLite: take the database's write lock now, so that what is read next stays as read until
    the transaction ends (``FOR UPDATE`` does nothing there, and a transaction otherwise starts at
    its first write). PostgreSQL: nothing (rows are locked one by one)."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(_SQLITE_WRITE_LOCK)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; aidmatch stores UTC-aware timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class IdArray(UserDefinedType[Sequence[int]]):
    """PostgreSQL: integer ids as one ``integer[]`` parameter, sent as the array's text (``{1,2,3}``)
    and rendered ``%(name)s::INTEGER[]``, so the server reads it as the array when it binds the
    parameter (a cast from ``text`` in the query instead would be run for every row scanned). psycopg
    dumps a list element by element in Python, with a regular expression run on each: ~1 µs an id, a
    tenth of a second for the ~100k ids the unmet statistics send; the text costs a fifth of that.
    Takes any sequence of ints (a numpy array too)."""

    cache_ok = True
    render_bind_cast = True

    def get_col_spec(self, **kw: Any) -> str:
        return "INTEGER[]"

    def bind_processor(self, dialect: Dialect) -> Callable[[Sequence[int] | None], str | None]:
        def process(value: Sequence[int] | None) -> str | None:
            return None if value is None else id_array_text(value)

        return process


def id_array_text(ids: Sequence[int]) -> str:
    """Integer ids as PostgreSQL's text of an array (``{1,2,3}``), for a parameter typed
    ``::integer[]`` (``IdArray``; psycopg sends a ``str`` untyped, so the server reads it as that)."""
    items = ids.tolist() if hasattr(ids, "tolist") else ids
    return "{" + ",".join(map(str, items)) + "}"  # a parameter: the server parses it as integers


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str, *, echo: bool = False) -> Engine:
    """An engine for the URL, with SQLite set up for a web service (FKs, WAL, busy timeout)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url,
            echo=echo,
            hide_parameters=True,  # an error's message (logged) must not carry people's phones
            connect_args={"check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        database_url,
        echo=echo,
        hide_parameters=True,  # an error's message (logged) must not carry people's phones
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        # A server that accepts and never answers must not hold a request (and a pool thread) for
        # ever: connecting gives up after this many seconds.
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    if engine.dialect.driver == "psycopg":
        event.listen(engine, "do_execute", _maybe_unprepared)
    return engine


CONNECT_TIMEOUT_S = 5

UNPREPARED = {"aidmatch_unprepared": True}
"""Execution options for a statement psycopg must never prepare on the server (see ``_maybe_unprepared``)."""


def _maybe_unprepared(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    """Run a statement marked ``UNPREPARED`` without a server-side prepared statement.

    psycopg prepares a statement after its fifth run on a connection, and PostgreSQL then keeps
    one generic plan for it when that plan looked no dearer than the first custom ones. A query
    planned while a table was nearly empty (``matches`` at start-up) keeps a sequential scan of it
    for the connection's life once the table has grown, until an ANALYZE of the table: measured
    60-230 ms a run instead of 0.35 ms. Unprepared, each run is planned for the table as it is.
    """
    if context.execution_options.get("aidmatch_unprepared"):
        cursor.execute(statement, parameters, prepare=False)
        return True
    return None


def dialect_insert(session: Session) -> Callable[..., postgresql.Insert | sqlite.Insert]:
    """``insert`` of the session's database (PostgreSQL's or SQLite's), for ``ON CONFLICT``."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; the route commits once, anything unfinished is rolled back."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


_UTC = UTCDateTime()
_RAW_INSERTS: dict[tuple[str, tuple[str, ...], bool], tuple[str, tuple[Any, ...]]] = {}


def _raw_insert(table: Table, columns: tuple[str, ...], returning: bool) -> tuple[str, tuple[Any, ...]] | None:
    """(SQL, how to pass each column's value) for ``insert_rows`` on psycopg; None when a column
    left out has a Python-side default (SQLAlchemy must fill it in)."""
    key = (table.name, columns, returning)
    if key not in _RAW_INSERTS:
        if any(c.default is not None and c.name not in columns and not c.primary_key for c in table.columns):
            return None
        if returning:
            if "id" in columns:
                return None
            columns = ("id", *columns)  # taken from the table's sequence first (``_run_raw``)
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        kinds = tuple(
            "json"
            if isinstance(table.c[name].type, JSON)
            else "utc"
            if isinstance(table.c[name].type, UTCDateTime)
            else ""
            for name in columns
        )
        _RAW_INSERTS[key] = (sql, kinds)
    return _RAW_INSERTS[key]


def _raw_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if isinstance(value, Enum):
        return value.value  # our enum columns store the values
    if kind == "json":
        return Json(value)
    if kind == "utc":
        return _UTC.process_bind_param(value, None)  # type: ignore[arg-type]
    return value


def insert_rows(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, returning_ids: bool = False
) -> list[int]:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in one call; with ``returning_ids``
    their new ids, in the rows' order (else []).

    On PostgreSQL (psycopg), on the driver's cursor: one ``COPY … FROM STDIN`` (rows formatted by
    psycopg's C code); with ids, these are drawn from the table's id sequence first (one query,
    in the rows' order) and copied with the rows. Per row this costs a fraction of an ``INSERT``
    (a single-row ``INSERT … RETURNING id`` per row in psycopg's pipeline took 2.7 ms for 15 needs,
    the sequence and ``COPY`` 1.0 ms). No SQLAlchemy bind processing runs per row (SQLAlchemy's
    multi-row insert has a new text per row count, over 50 parameters, converted anew each time). Values are
    passed as SQLAlchemy would bind them: enums as their values, JSON serialised, UTC timestamps.
    Elsewhere, or when a column left out has a Python-side default: SQLAlchemy's Core insert.
    """
    if not rows:
        return []
    bind = session.get_bind()
    columns = tuple(rows[0])
    raw = _raw_insert(table, columns, returning_ids) if bind.dialect.driver == "psycopg" else None
    if raw is None:
        stmt = insert(table)
        if returning_ids:
            return list(session.scalars(stmt.returning(table.c.id, sort_by_parameter_order=True), rows))
        session.execute(stmt, rows)
        return []
    sql, kinds = raw
    if returning_ids:
        kinds = kinds[1:]  # the id comes first, from the sequence
    params = []
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"rows for {table.name} must all have the columns {columns}")
        params.append([_raw_value(row[name], kind) for name, kind in zip(columns, kinds, strict=True)])
    connection: Any = session.connection().connection.dbapi_connection  # psycopg's own connection
    try:
        return _run_raw(connection, table.name, sql, params, returning_ids)
    except psycopg.Error as exc:  # as SQLAlchemy raises it (IntegrityError for a unique key, …)
        # Without its rows (people's phones and texts), as the engine's own errors are (``hide_parameters``).
        raise DBAPIError.instance(sql, params, exc, psycopg.Error, hide_parameters=True) from exc


_NEXT_IDS = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"


def _run_raw(connection: Any, table: str, sql: str, params: list[list[Any]], returning_ids: bool) -> list[int]:
    with connection.cursor() as cursor:
        ids: list[int] = []
        if returning_ids:
            # Sorted: the rows get increasing ids in their order, as one insert after another would.
            ids = sorted(int(i) for (i,) in cursor.execute(_NEXT_IDS, (table, len(params))).fetchall())
        with cursor.copy(sql) as copy:
            if returning_ids:
                for new_id, values in zip(ids, params, strict=True):
                    copy.write_row([new_id, *values])
            else:
                for values in params:
                    copy.write_row(values)
        return ids
