"""A bounded loopback load against `aidmatch serve` (uvicorn) on PostgreSQL.

The database holds the demo scenario scaled to ``--needs`` needs (default 100k) and ``--offers``
offers. A separate process (this script; the server is a subprocess) sends a fixed number of
requests from ``--clients`` concurrent keep-alive HTTP connections:

- ``POST /api/needs`` (``--posts`` requests), each a new need near the fires with its own phone
  number (so neither the duplicate merge nor the open-needs-per-phone limit applies); the abuse
  limit is lifted for this one client;
- ``GET /api/stats/unmet`` (``--stats`` requests) with a coordinator token.

``--client`` chooses what sends the healthz baseline and the POSTs: ``wrk`` (Debian's ``wrk``
4.x with ``benchmarks/wrk_fixed.lua``: C, one connection per wrk thread, every body sent once),
``python`` (threads with ``http.client``, which on a 2-core machine take much of the CPU the
server would use), ``both`` (Python first, then wrk, each with its own bodies, on the same
server: the healthz rows compare the clients; wrk's POSTs meet a database the Python POSTs have
grown), or ``auto`` (the default: wrk when it is on PATH, else Python, said in the output).
The statistics requests and the warm-up always use the Python client.

The database is ANALYZEd after seeding (``--no-analyze`` to skip): without planner statistics
PostgreSQL plans the intake's small lookups on ``matches`` as scans of the whole table.

Reports requests per second, p50/p90/p99 latency, the error count (failed or non-2xx answers)
and the CPU milliseconds per request of the server, of PostgreSQL and of the client for each. Baseline printed beside it: ``GET /healthz`` under the same load (the cost of the HTTP
stack and one query), so the ratio is what the route itself adds.

    .venv/bin/python benchmarks/load.py --needs 100000 --offers 20000 --posts 3000 --clients 16
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path
from unittest.mock import patch

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

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
from aidmatch.matches.live_needs import LiveNeeds

URGENCIES = ("critical", "urgent", "normal")
WRK_SCRIPT = Path(__file__).resolve().with_name("wrk_fixed.lua")
# A mobile prefix the demo scenario does not draw from: a posted need never repeats a seeded one.
PHONE_PREFIX = "+7958"


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
                ok = 200 <= response.status < 300
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


class CpuMeter:
    """CPU seconds (user + system, from /proc) of the server's processes, of the PostgreSQL
    backends serving the benchmark's database, and of the load generator, over one phase; and
    how many database sessions the server opened meanwhile.

    The machine is shared, so requests per second move with other people's work; CPU per request
    moves much less and says what each side costs. A backend that exits during the phase takes
    its CPU with it (counted: new sessions, which the pool opens beyond ``pool_size`` and closes
    again). The Python client's CPU is this process's (its threads are all that runs here during
    a phase); wrk's is that of waited-for children.
    """

    def __init__(self, server_pid: int, url: str) -> None:
        self.server_pid, self.url = server_pid, url
        self.database = make_url(url).database or ""
        self._tick = os.sysconf("SC_CLK_TCK")

    def _read(self) -> tuple[float, dict[int, float], float, int]:
        server = 0.0
        backends: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            used = (int(fields[11]) + int(fields[12])) / self._tick
            if int(entry.name) == self.server_pid or int(fields[1]) == self.server_pid:
                server += used
            elif command.startswith("postgres: ") and f" {self.database} " in command:
                backends[int(entry.name)] = used
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = time.process_time() + children.ru_utime + children.ru_stime
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                sessions = int(
                    conn.execute(
                        text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": self.database}
                    ).scalar_one()
                )
        finally:
            engine.dispose()
        return server, backends, client, sessions

    def start(self) -> None:
        self._start = self._read()

    def settle(self, *, idle_s: float = 1.0, timeout_s: float = 90.0) -> float:
        """Wait until the server uses under 5 % of a core over ``idle_s`` (its start-up work in
        the background, such as loading the gazetteer, done); returns the seconds waited."""
        started = time.monotonic()
        before = self._read()[0]
        while time.monotonic() - started < timeout_s:
            time.sleep(idle_s)
            now = self._read()[0]
            if now - before < 0.05 * idle_s:
                break
            before = now
        return time.monotonic() - started

    def per_request_ms(self, n: int) -> dict[str, float]:
        """CPU ms per request since ``start`` (server, database, client) and sessions opened."""
        server0, db0, client0, sessions0 = self._start
        server1, db1, client1, sessions1 = self._read()
        db = sum(used - db0.get(pid, 0.0) for pid, used in db1.items())
        n = max(n, 1)
        return {
            "server_cpu": 1000 * (server1 - server0) / n,
            "db_cpu": 1000 * db / n,
            "client_cpu": 1000 * (client1 - client0) / n,
            "sessions": sessions1 - sessions0 - 1,  # less our own reading
        }


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


def run_wrk(
    name: str, port: int, method: str, path: str, count: int, bodies: list[bytes] | None, clients: int
) -> dict[str, float | str | int]:
    """Send ``count`` requests (or each of ``bodies`` once) with wrk from ``clients`` connections.

    One wrk thread per connection, so each thread stops at its last answer with nothing in
    flight (see wrk_fixed.lua). wrk would then sleep out its whole ``-d``: once every thread
    has reported, it gets SIGINT, which ends the sleep and prints the totals. The rate is the
    answers over the span from the first request to the last answer. Errors: non-2xx answers,
    socket errors, and requests never answered (a broken connection leaves its thread waiting
    until the duration ends).
    """
    if bodies is not None:
        count = len(bodies)
    clients = min(clients, count)
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as f:
        if bodies is not None:
            f.write(b"\n".join(bodies) + b"\n")
            f.flush()
        command = ["wrk", f"-t{clients}", f"-c{clients}", f"-d{max(60, count // 20)}s", "--timeout", "60s"]
        command += ["-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}", "--", method, path, str(count), str(clients)]
        command.append(f.name if bodies is not None else "")
        wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert wrk.stdout is not None
        spans: list[tuple[float, float]] = []
        lines: list[str] = []
        for line in wrk.stdout:
            lines.append(line)
            if line.startswith("thread-done "):
                _, _, first_s, last_s = line.split()
                spans.append((float(first_s), float(last_s)))
                if len(spans) == clients:
                    wrk.send_signal(signal.SIGINT)
        if wrk.wait() != 0:
            raise RuntimeError(f"wrk failed ({wrk.returncode}):\n{''.join(lines)}")
    r = json.loads([line for line in lines if line.startswith("{")][-1])
    wall_s = max(last for _, last in spans) - min(first for first, _ in spans) if spans else float("nan")
    socket_errors = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    return {
        "name": name,
        "n": r["answered"],
        "rps": r["answered"] / wall_s,
        "p50": r["p50"],
        "p90": r["p90"],
        "p99": r["p99"],
        "errors": r["non2xx"] + socket_errors + r["queued"] - r["answered"],
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


def posts_per_transaction(url: str) -> str:
    """How many posted needs were written per transaction: an intake group stamps all its needs
    with one ``created_at``, a post written on its own has its own (warm-up posts included)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            sizes = np.array(
                conn.execute(
                    text("SELECT count(*) FROM needs WHERE contact_phone LIKE :p GROUP BY created_at"),
                    {"p": PHONE_PREFIX + "%"},
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    if not len(sizes):
        return "posted needs per transaction: none posted"
    return (
        f"posted needs per transaction (one created_at): {sizes.sum()} needs in {len(sizes)}; "
        f"mean {sizes.mean():.1f}, median {np.median(sizes):.0f}, max {sizes.max()}"
    )


def unmet_in_process(url: str, repeats: int) -> list[str]:
    """Time ``unmet_summary`` in this process: from the worker's live needs (as the service does; kept
    needs built first), from the database, and the database path with the old 64-nearest reach."""
    engine = make_engine(url)
    live_name, db_name, base_name = "aidmatch (live needs)", "aidmatch (from the db)", "baseline (64 nearest)"
    times: dict[str, list[float]] = {live_name: [], db_name: [], base_name: []}
    reasons: dict[str, np.ndarray] = {}
    summaries: dict[str, list[dict[str, object]]] = {}
    try:
        with make_sessionmaker(engine)() as session:
            live = LiveOfferIndex()
            live.refresh(session=session, now=utcnow())
            kept = LiveNeeds()
            matches_service.unmet_summary(session=session, live=live, now=utcnow(), needs=kept)
            for _ in range(repeats):
                for name in times:
                    with ExitStack() as stack:
                        if name == base_name:
                            stack.enter_context(patch.object(LiveOfferIndex, "reachable", _reachable_64))
                        needs = kept if name == live_name else None
                        t0 = time.perf_counter()
                        summary = matches_service.unmet_summary(session=session, live=live, now=utcnow(), needs=needs)
                        times[name].append(time.perf_counter() - t0)
                        summaries[name] = summary.groups
                        if name != live_name:
                            reasons[name] = matches_service.unmet(session=session, live=live, now=utcnow()).reason_code
            n_open = len(reasons[db_name])
            differ = int((reasons[db_name] != reasons[base_name]).sum())
    finally:
        engine.dispose()
    lines = [f"unmet_summary in-process over {n_open} unmet needs, {repeats} runs each (median, min ms):"]
    for name, t in times.items():
        lines.append(f"  {name:24} {1000 * float(np.median(t)):8.1f} {1000 * min(t):8.1f}")
    ratio = float(np.median(times[base_name])) / float(np.median(times[live_name]))
    same = "the same" if summaries[live_name] == summaries[db_name] else "DIFFERENT"
    lines.append(f"  baseline / live needs: {ratio:.1f}x; live needs and db give {same} groups")
    lines.append(f"  reasons differing between the db path and the baseline: {differ} needs")
    return lines


def post_bodies(n: int, *, seed: int) -> list[bytes]:
    """``n`` distinct new needs near the fires, each from its own phone number, as JSON bodies."""
    posts = scenario_mod.generate(n, 0, seed=seed)
    cats = list(Category)
    return [
        json.dumps(
            {
                "category": cats[int(posts.need_category[i])].value,
                "quantity": int(posts.need_quantity[i]),
                "urgency": URGENCIES[int(posts.need_urgency[i])],
                "lat": round(float(posts.need_lat[i]), 6),
                "lon": round(float(posts.need_lon[i]), 6),
                "contact_phone": f"{PHONE_PREFIX}{i:07d}",
            }
        ).encode()
        for i in range(n)
    ]


def pick_clients(choice: str) -> list[str]:
    """The load generators to run, in order; ``auto`` falls back to Python threads without wrk."""
    have_wrk = shutil.which("wrk") is not None
    if choice in ("wrk", "both") and not have_wrk:
        raise SystemExit("--client wrk needs wrk on PATH (Debian: apt-get install wrk)")
    if choice == "auto":
        if have_wrk:
            return ["wrk"]
        print(
            "NOTE: wrk is not installed; the load comes from Python threads (http.client), which share "
            "the 2 cores with the server and cap the rate well below what the server can do "
            "(apt-get install wrk for the C client)."
        )
        return ["python"]
    return ["python", "wrk"] if choice == "both" else [choice]


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
        help="after the load, compute the unmet statistics N times in this process: from kept live needs (as "
        "the service does), from the database, and the baseline (the database path with the reach search bounded "
        "to the 64 nearest helpers, as before)",
    )
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python", "both"),
        default="auto",
        help="what sends the healthz baseline and the POSTs (auto: wrk when installed, else Python threads)",
    )
    args = parser.parse_args()
    clients = pick_clients(args.client)
    print("aidmatch loopback load: uvicorn + PostgreSQL")
    print(
        f"demo scenario {args.needs} needs, {args.offers} offers; {args.posts} POST /api/needs, "
        f"{args.stats} GET /api/stats/unmet; {args.clients} connections ({' then '.join(clients)}); "
        f"{args.workers} uvicorn workers; "
        f"{'ANALYZE after seeding' if args.analyze else 'no ANALYZE'}"
        + ("" if args.stats_cache_s is None else f"; unmet stats cache {args.stats_cache_s:g} s")
    )
    for line in machine_info():
        print(line)
    if "wrk" in clients:
        print("wrk:     " + subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0])
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
            warm = 4 * args.workers
            bodies = post_bodies(args.posts * len(clients) + warm, seed=args.seed + 7)
            json_headers = {"Content-Type": "application/json"}
            # Warm every worker's live index first (the first lookup builds it).
            run_load(port, [("POST", "/api/needs", b, json_headers) for b in bodies[:warm]], args.workers * 2)
            results = []
            meter = CpuMeter(server.pid, url)
            # Start measuring once the workers' background start-up (the gazetteer, the first unmet
            # statistics) is over: a post that came with coordinates no longer waits for it.
            print(f"server settled {meter.settle():.1f} s after the warm-up")
            for k, client in enumerate(clients):
                mine = bodies[warm + k * args.posts : warm + (k + 1) * args.posts]
                tag = f" [{client}]"
                healthz = [("GET", "/healthz", None, {})] * args.posts
                posts = [("POST", "/api/needs", b, json_headers) for b in mine]
                meter.start()
                if client == "wrk":
                    r = run_wrk("GET /healthz" + tag, port, "GET", "/healthz", args.posts, None, args.clients)
                else:
                    r = summary("GET /healthz" + tag, *run_load(port, healthz, args.clients))
                results.append({**r, **meter.per_request_ms(int(r["n"]))})
                meter.start()
                if client == "wrk":
                    r = run_wrk("POST /api/needs" + tag, port, "POST", "/api/needs", 0, mine, args.clients)
                else:
                    r = summary("POST /api/needs" + tag, *run_load(port, posts, args.clients))
                results.append({**r, **meter.per_request_ms(int(r["n"]))})
            stats = [("GET", "/api/stats/unmet", None, {"Authorization": f"Bearer {token}"})] * args.stats
            meter.start()
            r = summary("GET /api/stats/unmet", *run_load(port, stats, 2))
            results.append({**r, **meter.per_request_ms(int(r["n"]))})
        finally:
            server.terminate()
            server.wait(timeout=30)
        groups_line = posts_per_transaction(url)
        if args.unmet_in_process:
            unmet_lines = unmet_in_process(url, args.unmet_in_process)
    print()
    print(
        f"{'request':30} {'n':>6} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f"   CPU ms/request: {'server':>7} {'db':>6} {'client':>7}  {'db sessions':>11}"
    )
    for r in results:
        print(
            f"{r['name']:30} {r['n']:6d} {r['rps']:8.1f} {r['p50']:8.1f} {r['p90']:8.1f} {r['p99']:8.1f} {r['errors']:7d}"
            f"                   {r['server_cpu']:7.2f} {r['db_cpu']:6.2f} {r['client_cpu']:7.2f}  {r['sessions']:11d}"
        )
    print()
    for base, post in zip(results[0:-1:2], results[1:-1:2], strict=True):
        print(
            f"{post['name']} vs {base['name']}: {float(post['p50']) / float(base['p50']):.1f}x p50, "
            f"{float(base['rps']) / float(post['rps']):.1f}x fewer requests per second"
        )
    print(groups_line)
    if args.unmet_in_process:
        print()
        for line in unmet_lines:
            print(line)


if __name__ == "__main__":
    main()
