"""The matcher inside the service: one batch run through the database, and POST /api/needs.

On the demo wildfire scenario scaled up (default 100k needs and 100k offers), per database backend:

- seed the scenario (`aidmatch.demo`), timed;
- intake: start `aidmatch serve` (scheduler off) and POST new needs one after another over HTTP
  (urllib, a new connection per request, as a phone's browser would). The first request builds the
  worker's live index from the database; the rest use it. Baseline: building a live index from the
  database for every request (``LiveOfferIndex().refresh()``, timed in-process), the design the
  live index replaces;
- batch: one `batch_job` (the scheduler's job: load → match → write matches and SMS, one
  transaction). Baseline: `matching.match` alone on the same arrays in memory, so the ratio is the
  cost of the database around the matcher.

    .venv/bin/python benchmarks/service.py --needs 100000 --offers 100000 --posts 300
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine_info
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import matching
from aidmatch import migrate
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.demo import scenario as scenario_mod
from aidmatch.demo import service as demo_service
from aidmatch.matches import service as matches_service
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.scheduler import batch_job

POSTGRES_ADMIN = os.environ.get("AIDMATCH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
URGENCIES = ("critical", "urgent", "normal")


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    name = f"aidmatch_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "AIDMATCH_DATABASE_URL": url,
        "AIDMATCH_SCHEDULER_ENABLED": "false",
        "AIDMATCH_PUBLIC_POST_BURST": "1000000",  # one client posts everything here: no abuse limit
    }
    aidmatch = str(Path(sys.executable).with_name("aidmatch"))
    proc = subprocess.Popen(
        [aidmatch, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("aidmatch serve did not come up") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def post_need(base: str, body: dict[str, object]) -> tuple[float, dict[str, object]]:
    req = urllib.request.Request(
        base + "/api/needs", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.loads(r.read())
        status = r.status
    elapsed = time.perf_counter() - t
    if status != 201:
        raise RuntimeError(f"POST /api/needs gave {status}")
    return elapsed, out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"backend": backend}
    with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as url:
        settings = Settings(database_url=url, scheduler_enabled=False, _env_file=None)
        migrate.upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        scen = scenario_mod.generate(args.needs, args.offers, seed=args.seed)
        t = time.perf_counter()
        with sessions() as session:
            demo_service.seed(session=session, scenario=scen, settings=settings, seed=args.seed)
            session.commit()
        seeded_at = time.perf_counter()
        out["seed_s"] = seeded_at - t
        print(f"[{backend}] seeded {args.needs} needs, {args.offers} offers in {out['seed_s']:.1f} s", flush=True)

        # Intake over HTTP.
        posts = scenario_mod.generate(args.posts + 1, 0, seed=args.seed + 1)
        cats = list(Category)
        bodies = [
            {
                "category": cats[int(posts.need_category[i])].value,
                "quantity": int(posts.need_quantity[i]),
                "urgency": URGENCIES[int(posts.need_urgency[i])],
                "lat": round(float(posts.need_lat[i]), 6),
                "lon": round(float(posts.need_lon[i]), 6),
                "description": "benchmark",
            }
            for i in range(args.posts + 1)
        ]
        half = 1 + args.posts // 2
        with server(url) as base:
            cold, _ = post_need(base, bodies[0])
            lat: list[float] = []
            found: list[int] = []
            for body in bodies[1:half]:
                dt, answer = post_need(base, body)
                lat.append(dt)
                found.append(int(answer["helpers_in_range"]))  # type: ignore[call-overload]
            # The live index re-reads the last minute of offer changes on every lookup: right after
            # a bulk import that is every offer. The second half runs once that minute is over.
            time.sleep(max(0.0, 61.0 - (time.perf_counter() - seeded_at)))
            steady: list[float] = []
            for body in bodies[half:]:
                dt, answer = post_need(base, body)
                steady.append(dt)
                found.append(int(answer["helpers_in_range"]))  # type: ignore[call-overload]
        rebuild: list[float] = []
        for _ in range(3):
            with sessions() as session:
                t = time.perf_counter()
                LiveOfferIndex().refresh(session=session, now=utcnow())
                rebuild.append(time.perf_counter() - t)
        out["post_cold_ms"] = cold * 1e3
        out["post_fresh_p50_ms"] = pct(lat, 50) * 1e3
        out["post_p50_ms"] = pct(steady, 50) * 1e3
        out["post_p90_ms"] = pct(steady, 90) * 1e3
        out["post_p99_ms"] = pct(steady, 99) * 1e3
        out["post_mean_helpers_found"] = statistics.fmean(found)
        out["rebuild_index_ms"] = min(rebuild) * 1e3
        print(
            f"[{backend}] POST /api/needs x{len(steady)} a minute after the import: p50 {out['post_p50_ms']:.1f} ms, "
            f"p90 {out['post_p90_ms']:.1f} ms, p99 {out['post_p99_ms']:.1f} ms; x{len(lat)} right after it: p50 "
            f"{out['post_fresh_p50_ms']:.1f} ms; the first {cold * 1e3:.0f} ms; "
            f"rebuilding the live index: {min(rebuild) * 1e3:.0f} ms",
            flush=True,
        )

        # The pure matcher on the same arrays the batch will load (read in a transaction rolled back).
        with sessions() as session:
            now = utcnow()
            needs = matches_service.load_open_needs(session=session, now=now)
            offers = matches_service.load_open_offers(session=session, now=now)
            session.rollback()
        t = time.perf_counter()
        pure = matching.match(
            matching.Needs(needs.lat, needs.lon, needs.category, needs.remaining, needs.urgency, needs.max_km),
            matching.Offers(offers.lat, offers.lon, offers.category_mask, offers.remaining, offers.radius_km),
        )
        out["pure_match_s"] = time.perf_counter() - t
        print(f"[{backend}] matching.match alone: {out['pure_match_s']:.1f} s", flush=True)

        t = time.perf_counter()
        outcome = batch_job(sessions=sessions, trigger="benchmark", require_emergency=False)
        out["batch_wall_s"] = time.perf_counter() - t
        run = outcome.run
        assert run is not None, outcome.skipped
        assert run.status.value == "succeeded", run.error
        out["batch_timings_s"] = run.timings_s
        out["batch_needs"] = run.needs_count
        out["batch_offers"] = run.offers_count
        out["batch_units"] = run.assigned_quantity
        out["pure_units"] = int(pure.quantity.sum())
        out["batch_messages"] = run.config.get("messages")
        print(
            f"[{backend}] batch run {out['batch_wall_s']:.1f} s wall: {run.timings_s}; "
            f"{run.assigned_quantity} units to {run.matched_needs} needs, {out['batch_messages']} SMS queued",
            flush=True,
        )
        engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--needs", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2010)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    print("aidmatch in the service: batch run through the database and POST /api/needs")
    print(f"demo wildfire scenario, {args.needs} needs, {args.offers} offers, seed {args.seed}")
    for line in machine_info():
        print(line)
    results = [run_backend(b, args) for b in args.backends]
    print()
    head = (
        f"{'backend':10} {'seed s':>7} {'POST p50':>9} {'p99 ms':>7} {'fresh':>6} {'cold ms':>8} {'rebuild':>8} "
        f"{'batch s':>8} {'load':>6} {'match':>7} {'write':>6} {'pure s':>7} {'db/pure':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        tm = r["batch_timings_s"]
        assert isinstance(tm, dict)
        print(
            f"{r['backend']:10} {r['seed_s']:7.1f} {r['post_p50_ms']:9.1f} {r['post_p99_ms']:7.1f} "
            f"{r['post_fresh_p50_ms']:6.1f} "
            f"{r['post_cold_ms']:8.0f} {r['rebuild_index_ms']:8.0f} {r['batch_wall_s']:8.1f} {tm['load']:6.1f} "
            f"{tm['match']:7.1f} {tm['write']:6.1f} {r['pure_match_s']:7.1f} "
            f"{float(r['batch_wall_s']) / float(r['pure_match_s']):7.2f}"  # type: ignore[arg-type]
        )
    print()
    print("POST: ms per request over HTTP, a minute after the bulk import; fresh = p50 right after it;")
    print("cold = the first request (builds the live index, while the gazetteer loads in the background);")
    print("rebuild = building a live index from the database once (the cost per request without a live index);")
    print("db/pure = batch job wall time / matching.match alone on the same arrays")


if __name__ == "__main__":
    main()
