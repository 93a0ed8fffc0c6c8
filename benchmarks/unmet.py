"""The unmet statistics computed in-process on PostgreSQL: from the database vs from the live needs.

Seeds a fresh PostgreSQL database with the demo scenario (``--needs`` needs, ``--offers`` offers),
runs one batch (``--no-batch`` to skip: then no request awaits an answer and every offer has room),
ANALYZEs, then times ``unmet_summary`` in this process:

- ``database``: every open need read and searched (``needs=None``, the path before the live needs);
- ``live, cold``: a worker's first computation (all open needs loaded, reach searched in full);
- ``live, nothing changed``: the same worker again;
- ``live, after N posts``: ``--posts`` needs posted between computations through the intake's own
  service calls (create or merge, ask the nearest helpers; one commit each), as ``POST /api/needs``.

After every timed computation the reasons and the summary are checked against the database path.

    .venv/bin/python benchmarks/unmet.py --needs 100000 --offers 20000 --repeats 7 --posts 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine_info
from service import database

from aidmatch import migrate
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.demo import scenario as scenario_mod
from aidmatch.demo import service as demo_service
from aidmatch.enums import Urgency
from aidmatch.matches import proposals
from aidmatch.matches import service as matches_service
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.live_needs import LiveNeeds
from aidmatch.needs import service as needs_service
from aidmatch.needs.schemas import NeedIn
from geo.geocoding import GazetteerGeocoder


def _ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):8.1f} {1000 * min(times):8.1f} {1000 * max(times):8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--needs", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--posts", type=int, default=20, help="needs posted between two timed computations")
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=2010)
    args = parser.parse_args()
    print(f"unmet statistics in-process: demo scenario {args.needs} needs, {args.offers} offers, PostgreSQL")
    for line in machine_info():
        print(line)
    with tempfile.TemporaryDirectory() as tmp, database("postgresql", Path(tmp)) as url:
        settings = Settings(database_url=url, scheduler_enabled=False, _env_file=None)
        migrate.upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            scenario = scenario_mod.generate(args.needs, args.offers, seed=args.seed)
            demo_service.seed(session=session, scenario=scenario, settings=settings, seed=args.seed)
            session.commit()
            if args.batch:
                run = matches_service.run_batch(session=session, time_budget_s=10.0)
                session.commit()
                print(f"batch: {run.assigned_quantity} units asked in {run.config['messages']} requests")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
        posts = scenario_mod.generate(args.posts * args.repeats, 0, seed=args.seed + 7)
        categories, urgencies = list(Category), list(Urgency)
        times: dict[str, list[float]] = {"database": [], "live, cold": [], "live, nothing changed": []}
        after = f"live, after {args.posts} posts"
        times[after] = []
        checked = 0
        with sessions() as session:
            live, needs = LiveOfferIndex(), LiveNeeds()
            live.refresh(session=session, now=utcnow())

            def timed(name: str, live_needs: LiveNeeds | None) -> matches_service.UnmetSummary:
                started = time.perf_counter()
                summary = matches_service.unmet_summary(session=session, live=live, now=utcnow(), needs=live_needs)
                times[name].append(time.perf_counter() - started)
                return summary

            def check() -> None:
                nonlocal checked
                now = utcnow()
                fast = matches_service.unmet(session=session, live=live, now=now, needs=needs)
                slow = matches_service.unmet(session=session, live=live, now=now)
                assert np.array_equal(fast.needs.id, slow.needs.id)
                assert np.array_equal(fast.reason_code, slow.reason_code)
                assert matches_service.unmet_stats(
                    session=session, live=live, now=now, needs=needs
                ) == matches_service.unmet_stats(session=session, live=live, now=now)
                checked += 1

            timed("live, cold", needs)
            check()
            for _ in range(args.repeats):
                timed("database", None)
                timed("live, nothing changed", needs)
            check()
            geocoder = GazetteerGeocoder([])
            for r in range(args.repeats):
                for i in range(r * args.posts, (r + 1) * args.posts):
                    need_in = NeedIn(
                        category=categories[int(posts.need_category[i])],
                        quantity=int(posts.need_quantity[i]),
                        urgency=urgencies[int(posts.need_urgency[i])],
                        lat=round(float(posts.need_lat[i]), 6),
                        lon=round(float(posts.need_lon[i]), 6),
                    )
                    need, merged = needs_service.create_or_merge(
                        session=session, need_in=need_in, settings=settings, geocoder=geocoder
                    )
                    if not merged:
                        proposals.propose_for_need(
                            session=session, need=need, live=live, settings=settings, now=utcnow()
                        )
                    session.commit()
                summary = timed(after, needs)
                check()
            print(f"unmet needs at the end: {summary.unmet_needs}; {checked} computations equal to the database path")
        engine.dispose()
    print()
    print(f"{'unmet_summary':32} {'n':>3} {'median':>8} {'min':>8} {'max':>8} ms")
    for name, t in times.items():
        print(f"{name:32} {len(t):3d} {_ms(t)}")
    ratio = statistics.median(times["database"]) / statistics.median(times[after])
    print(f"database / live after posts (medians): {ratio:.1f}x")


if __name__ == "__main__":
    main()
