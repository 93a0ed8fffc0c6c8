"""``CandidateFacts`` (one read per lookup round) against the plain definitions, on random data.

The definitions: units awaiting an answer summed per offer over every pending match
(``pending_units``), helpers at their cap counted over every open task (``busy_helpers``), and a
helper's contact read from its row.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from aidmatch import migrate
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.enums import Language, MatchStatus, NeedStatus, OfferStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches.models import Match
from aidmatch.matches.proposals import _FACTS_BY, CandidateFacts, HelperContact, busy_helpers, pending_units
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from tests.databases import fresh_postgres_database


def _seed(session: Session, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Helpers with one to three offers each, and matches of every status on them; (helpers, offers)."""
    now = utcnow()
    helpers = session.scalars(
        insert(Helper).returning(Helper.id),
        [
            {
                "name": f"h{i}",
                "phone": f"+7900{i:07d}",
                "max_active_tasks": int(rng.integers(1, 4)),
                "sms_consent": bool(rng.random() < 0.7),
                "language": list(Language)[int(rng.integers(0, len(Language)))],
            }
            for i in range(40)
        ],
    ).all()
    offer_rows = [
        {
            "helper_id": h,
            "capacity": 5,
            "capacity_used": 0,
            "lat": 54.6,
            "lon": 39.7,
            "radius_km": 10.0,
            "status": OfferStatus.active,
            "created_at": now,
            "updated_at": now,
        }
        for h in helpers
        for _ in range(int(rng.integers(1, 4)))
    ]
    offers = session.scalars(insert(Offer).returning(Offer.id), offer_rows).all()
    need = session.scalars(
        insert(Need).returning(Need.id),
        [{"code": "T00001", "category": "water", "quantity": 1, "lat": 54.6, "lon": 39.7, "status": NeedStatus.open}],
    ).one()
    statuses = list(MatchStatus)
    session.execute(
        insert(Match),
        [
            {
                "need_id": need,
                "offer_id": int(rng.choice(offers)),
                "quantity": int(rng.integers(1, 4)),
                "distance_km": 1.0,
                "status": statuses[int(rng.integers(0, len(statuses)))],
                "created_at": now,
                "updated_at": now,
            }
            for _ in range(120)
        ],
    )
    session.flush()
    return list(helpers), list(offers)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidate_facts_equal_the_plain_definitions(db: Session, seed: int) -> None:
    rng = np.random.default_rng(seed)
    helpers, offers = _seed(db, rng)
    held_everywhere = pending_units(db, "offer")
    busy = busy_helpers(db)
    owner = dict(db.execute(select(Offer.id, Offer.helper_id)).tuples().all())
    contact = {
        h: HelperContact(consent, phone, language)
        for h, consent, phone, language in db.execute(
            select(Helper.id, Helper.sms_consent, Helper.phone, Helper.language)
        ).tuples()
    }
    also = {helpers[0]}
    for _ in range(5):
        some_offers = sorted(int(o) for o in rng.choice(offers, size=12, replace=False))
        their_helpers = sorted({owner[o] for o in some_offers})
        other_helpers = sorted(int(h) for h in rng.choice(helpers, size=6, replace=False))
        expected_held = {o: held_everywhere[o] for o in some_offers if held_everywhere.get(o)}
        # As LiveOfferIndex.nearest asks (helpers, then their offers), and each on its own.
        facts = CandidateFacts(db, also)
        assert facts.blocked(their_helpers) == ({h for h in their_helpers if h in busy} | also)
        assert facts.pending(some_offers) == expected_held
        assert facts.blocked(other_helpers) == ({h for h in other_helpers if h in busy} | also)
        assert {h: facts.contacts[h] for h in their_helpers} == {h: contact[h] for h in their_helpers}
        alone = CandidateFacts(db)
        assert alone.pending(some_offers) == expected_held
        assert alone.blocked(their_helpers) == {h for h in their_helpers if h in busy}
        assert alone.pending([]) == {}
        assert alone.blocked([]) == set()


@pytest.mark.postgres
def test_facts_reads_are_never_prepared_on_the_server() -> None:
    """psycopg prepares a statement after its fifth run; PostgreSQL may then keep a generic plan
    made while ``matches`` was small (a scan of the whole table) for the connection's life. The
    facts reads run unprepared, so each is planned for the table as it is."""
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as db:
                helpers, offers = _seed(db, np.random.default_rng(4))
                prepared = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%max_active_tasks%'"
                for k in range(8):
                    facts = CandidateFacts(db)
                    facts.blocked(helpers[k : k + 5])
                    facts.pending(offers[k : k + 5])
                assert db.scalar(text(prepared)) == 0
                # The check sees one: the same statement without the option is prepared by its sixth run.
                for k in range(8):
                    db.execute(_FACTS_BY["helper"]["postgresql"], {"ids": helpers[k : k + 5]}).all()
                assert db.scalar(text(prepared)) == 1
        finally:
            engine.dispose()
