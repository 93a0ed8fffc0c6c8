"""A bounded loopback load against `aidmatch serve` (uvicorn) on PostgreSQL.

The database holds the demo scenario scaled to ``--needs`` needs (default 100k) and ``--offers``
offers. A separate process (this script; the server is a subprocess) sends a fixed number of
requests from ``--clients`` threads over keep-alive HTTP connections:

- ``POST /api/needs`` (``--posts`` requests), each a new need near the fires; the abuse limit is
  lifted for this one client;
- ``GET /api/stats/unmet`` (``--stats`` requests) with a coordinator token.

The database is ANALYZEd after seeding (``--no-analyze`` to skip): without planner statistics
PostgreSQL plans the intake's small lookups on ``matches`` as scans of the whole table.

Reports requests per second, p50/p90/p99 latency and the error count for each. Baseline printed
beside it: ``GET /healthz`` under the same load (the cost of the HTTP stack and one query), so the
ratio is what the route itself adds.

    .venv/bin/python benchmarks/load.py --needs 100000 --offers 20000 --posts 3000 --clients 16
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path
from unittest.mock import patch

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine_info
from service import database, free_port

import matching
from aidmatch import migrate
from aidmatch.auth import service as auth_service
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.demo import scenario as scenario_mod
from aidmatch.demo import service as demo_service
from aidmatch.enums import Role
from aidmatch.matches import service as matches_service
from aidmatch.matches.live import LiveOfferIndex

URGENCIES = ("critical", "urgent", "normal")


def run_load(
    port: int, requests: list[tuple[str, str, bytes | None, dict[str, str]]], clients: int
) -> tuple[float, list[float], int]:
    """Send every request once from ``clients`` threads; (wall seconds, latencies, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    cursor = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if cursor[0] >= len(requests):
                    break
                method, path, body, headers = requests[cursor[0]]
                cursor[0] += 1
            t = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status < 400
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t
            with lock:
                latencies.append(dt)
                errors[0] += not ok
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, errors[0]


def summary(name: str, wall: float, lat: list[float], errors: int) -> dict[str, float | str | int]:
    a = np.array(lat) * 1e3
    return {
        "name": name,
        "n": len(lat),
        "rps": len(lat) / wall,
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "errors": errors,
    }


def _reachable_64(
    self: LiveOfferIndex,
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    category: np.ndarray,
    max_km: np.ndarray,
    pending: dict[int, int],
    blocked_helpers: Collection[int] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline: ``LiveOfferIndex.reachable`` as it was, looking at the 64 nearest helpers only."""
    with self._lock:
        n = len(lat)
        offers, left = self._columns(pending, blocked_helpers)
        category = np.broadcast_to(np.asarray(category, dtype=np.int64), (n,))
        max_km = np.broadcast_to(np.asarray(max_km, dtype=np.float64), (n,))
        _, nearest_km = self._index.knn(lat, lon, category, 1)
        in_range = np.zeros(n, dtype=bool)
        with_room = np.zeros(n, dtype=bool)
        ask = np.flatnonzero(np.isfinite(nearest_km[:, 0]))
        if len(ask):
            everyone = np.ones(self._n, dtype=np.int64)
            args = (lat[ask], lon[ask], category[ask])
            anyone, _ = matching.nearest_capable(
                self._index, offers, everyone, *args, max_km=max_km[ask], k=1, max_candidates=64
            )
            in_range[ask] = anyone[:, 0] >= 0
        ask = np.flatnonzero(in_range)
        if len(ask):
            args = (lat[ask], lon[ask], category[ask])
            room, _ = matching.nearest_capable(
                self._index, offers, left, *args, max_km=max_km[ask], k=1, max_candidates=64
            )
            with_room[ask] = room[:, 0] >= 0
        return nearest_km[:, 0], in_range, with_room


def unmet_in_process(url: str, repeats: int) -> list[str]:
    """Time ``unmet_summary`` in this process (its own live index, built first), aidmatch vs baseline."""
    engine = make_engine(url)
    times: dict[str, list[float]] = {"aidmatch": [], "baseline (64 nearest)": []}
    reasons: dict[str, np.ndarray] = {}
    try:
        with make_sessionmaker(engine)() as session:
            live = LiveOfferIndex()
            live.refresh(session=session, now=utcnow())
            for _ in range(repeats):
                for name in times:
                    with ExitStack() as stack:
                        if name != "aidmatch":
                            stack.enter_context(patch.object(LiveOfferIndex, "reachable", _reachable_64))
                        t0 = time.perf_counter()
                        matches_service.unmet_summary(session=session, live=live, now=utcnow())
                        times[name].append(time.perf_counter() - t0)
                        reasons[name] = matches_service.unmet(session=session, live=live, now=utcnow()).reason_code
            n_open = len(reasons["aidmatch"])
            differ = int((reasons["aidmatch"] != reasons["baseline (64 nearest)"]).sum())
    finally:
        engine.dispose()
    lines = [f"unmet_summary in-process over {n_open} unmet needs, {repeats} runs each (median, min ms):"]
    for name, t in times.items():
        lines.append(f"  {name:24} {1000 * float(np.median(t)):8.1f} {1000 * min(t):8.1f}")
    ratio = float(np.median(times["baseline (64 nearest)"])) / float(np.median(times["aidmatch"]))
    lines.append(f"  baseline / aidmatch: {ratio:.1f}x; reasons differing between the two: {differ} needs")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--needs", type=int, default=100_000)
    parser.add_argument("--offers", type=int, default=20_000)
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--stats", type=int, default=30)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--seed", type=int, default=2010)
    parser.add_argument(
        "--stats-cache-s",
        type=float,
        default=None,
        help="the server's AIDMATCH_UNMET_STATS_CACHE_S (default: the setting's default; 0 computes every time)",
    )
    parser.add_argument(
        "--analyze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ANALYZE the database after seeding (--no-analyze: query plans without statistics)",
    )
    parser.add_argument(
        "--unmet-in-process",
        type=int,
        default=0,
        metavar="N",
        help="after the load, compute the unmet statistics N times in this process, aidmatch and the baseline "
        "(the reach search bounded to the 64 nearest helpers, as before)",
    )
    args = parser.parse_args()
    print("aidmatch loopback load: uvicorn + PostgreSQL")
    print(
        f"demo scenario {args.needs} needs, {args.offers} offers; {args.posts} POST /api/needs, "
        f"{args.stats} GET /api/stats/unmet; {args.clients} client threads; {args.workers} uvicorn workers; "
        f"{'ANALYZE after seeding' if args.analyze else 'no ANALYZE'}"
        + ("" if args.stats_cache_s is None else f"; unmet stats cache {args.stats_cache_s:g} s")
    )
    for line in machine_info():
        print(line)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, database("postgresql", Path(tmp)) as url:
        settings = Settings(database_url=url, scheduler_enabled=False, _env_file=None)
        migrate.upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        with make_sessionmaker(engine)() as session:
            demo_service.seed(
                session=session,
                scenario=scenario_mod.generate(args.needs, args.offers, seed=args.seed),
                settings=settings,
                seed=args.seed,
            )
            _, token = auth_service.create(session=session, name="load", role=Role.coordinator)
            session.commit()
        if args.analyze:
            # Planner statistics for the freshly loaded tables, as autovacuum gathers them on a
            # default server within a minute of a bulk load (this machine runs with it off).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        engine.dispose()
        port = free_port()
        env = {
            **os.environ,
            "AIDMATCH_DATABASE_URL": url,
            "AIDMATCH_SCHEDULER_ENABLED": "false",
            "AIDMATCH_PUBLIC_POST_BURST": "10000000",
            "AIDMATCH_MAX_OPEN_NEEDS_PER_PHONE": "10000000",
        }
        if args.stats_cache_s is not None:
            env["AIDMATCH_UNMET_STATS_CACHE_S"] = str(args.stats_cache_s)
        aidmatch = str(Path(sys.executable).with_name("aidmatch"))
        server = subprocess.Popen(
            [aidmatch, "serve", "--port", str(port), "--workers", str(args.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("aidmatch serve did not come up")
                time.sleep(0.3)
            posts = scenario_mod.generate(args.posts, 0, seed=args.seed + 7)
            cats = list(Category)
            json_headers = {"Content-Type": "application/json"}
            post_requests = [
                (
                    "POST",
                    "/api/needs",
                    json.dumps(
                        {
                            "category": cats[int(posts.need_category[i])].value,
                            "quantity": int(posts.need_quantity[i]),
                            "urgency": URGENCIES[int(posts.need_urgency[i])],
                            "lat": round(float(posts.need_lat[i]), 6),
                            "lon": round(float(posts.need_lon[i]), 6),
                        }
                    ).encode(),
                    json_headers,
                )
                for i in range(args.posts)
            ]
            # Warm every worker's live index first (the first lookup builds it).
            run_load(port, post_requests[: 4 * args.workers], args.workers * 2)
            results = [
                summary(
                    "GET /healthz (baseline)",
                    *run_load(port, [("GET", "/healthz", None, {})] * args.posts, args.clients),
                ),
                summary("POST /api/needs", *run_load(port, post_requests[4 * args.workers :], args.clients)),
                summary(
                    "GET /api/stats/unmet",
                    *run_load(
                        port, [("GET", "/api/stats/unmet", None, {"Authorization": f"Bearer {token}"})] * args.stats, 2
                    ),
                ),
            ]
        finally:
            server.terminate()
            server.wait(timeout=30)
        if args.unmet_in_process:
            unmet_lines = unmet_in_process(url, args.unmet_in_process)
    print()
    print(f"{'request':28} {'n':>6} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(
            f"{r['name']:28} {r['n']:6d} {r['rps']:8.1f} {r['p50']:8.1f} {r['p90']:8.1f} {r['p99']:8.1f} {r['errors']:7d}"
        )
    base = results[0]
    print()
    print(
        f"POST /api/needs vs /healthz: {float(results[1]['p50']) / float(base['p50']):.1f}x p50, "
        f"{float(base['rps']) / float(results[1]['rps']):.1f}x fewer requests per second"
    )
    if args.unmet_in_process:
        print()
        for line in unmet_lines:
            print(line)


if __name__ == "__main__":
    main()
