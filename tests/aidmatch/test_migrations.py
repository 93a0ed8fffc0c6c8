"""The migrated schema is exactly the ORM metadata, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from aidmatch import migrate
from aidmatch.database import make_engine
from aidmatch.models import Base
from tests.databases import fresh_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_gives_exactly_the_orm_schema(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    assert _diff(empty_url) == []
    head = ScriptDirectory.from_config(migrate.alembic_config(empty_url)).get_current_head()
    assert migrate.current(empty_url) == head


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    # Every step down and up again, on an empty schema (data-keeping steps are tested one by one below).
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(empty_url)
    assert _diff(empty_url) == []


def test_a_model_change_without_migration_is_detected(tmp_path: Path) -> None:
    # The drift check itself must be able to fail: drop a column behind Alembic's back.
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE needs DROP COLUMN description")
    engine.dispose()
    diff = _diff(url)
    assert any("description" in repr(d) for d in diff)


def test_0007_keeps_every_match_and_gives_each_pair_one_helper_row(empty_url: str) -> None:
    """Matches written before 0007 (one pair asked twice, as the race could do) survive it with what
    points at them: the first of the pair names its helper, the repeat keeps none, and from then on a
    repeat is refused."""
    migrate.upgrade(empty_url, "0006")
    engine = make_engine(empty_url)
    stamp = "2026-11-27 10:00:00"
    try:
        with engine.begin() as conn:
            for helper in (1, 2):
                conn.execute(
                    text(
                        "INSERT INTO helpers (id, name, phone, language, is_organisation, sms_consent, vetting_tier,"
                        " max_active_tasks, created_at, updated_at) VALUES (:id, 'h', :phone, 'ru', false, true,"
                        " 'unverified', 5, :t, :t)"
                    ),
                    {"id": helper, "phone": f"+7916000000{helper}", "t": stamp},
                )
            # Helper 1 has two offers; helper 2 one.
            for offer, helper in ((10, 1), (11, 1), (12, 2)):
                conn.execute(
                    text(
                        "INSERT INTO offers (id, helper_id, capacity, capacity_used, lat, lon, radius_km, status,"
                        " created_at, updated_at) VALUES (:id, :h, 3, 0, 55.0, 40.0, 30, 'active', :t, :t)"
                    ),
                    {"id": offer, "h": helper, "t": stamp},
                )
            conn.execute(
                text(
                    "INSERT INTO needs (id, code, category, quantity, quantity_assigned, urgency, lat, lon, language,"
                    " source, status, created_at, updated_at) VALUES (100, 'AB12', 'water', 2, 0, 'normal', 55.0,"
                    " 40.0, 'ru', 'api', 'open', :t, :t)"
                ),
                {"t": stamp},
            )
            # Helper 1 asked twice about need 100 (through both offers), helper 2 once.
            for match, offer in ((1000, 10), (1001, 11), (1002, 12)):
                conn.execute(
                    text(
                        "INSERT INTO matches (id, need_id, offer_id, quantity, distance_km, score, reason, status,"
                        " created_at, updated_at) VALUES (:id, 100, :o, 1, 1.0, 1.0, '', 'notified', :t, :t)"
                    ),
                    {"id": match, "o": offer, "t": stamp},
                )
            # The SMS of a request points at its match (SQLite rebuilds the matches table: a rebuild with
            # foreign keys on would have set this to NULL).
            conn.execute(
                text(
                    "INSERT INTO messages (direction, status, channel, phone, body, language, idempotency_key,"
                    " need_id, match_id, helper_id, attempts, created_at, updated_at) VALUES ('outbound', 'sent',"
                    " 'sms', '+79160000001', 'hi', 'ru', 'match:1000:ask', 100, 1000, 1, 0, :t, :t)"
                ),
                {"t": stamp},
            )
        migrate.upgrade(empty_url)
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT id, helper_id FROM matches ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(1000, 1), (1001, None), (1002, 2)]
            assert conn.execute(text("SELECT match_id FROM messages")).scalar_one() == 1000
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO matches (need_id, offer_id, helper_id, quantity, distance_km, score, reason, status,"
                    " created_at, updated_at) VALUES (100, 12, 2, 1, 1.0, 1.0, '', 'notified', :t, :t)"
                ),
                {"t": stamp},
            )
    finally:
        engine.dispose()
