"""Two service processes on one PostgreSQL database, driven at once (issue: several workers).

Each runs its own scheduler (batch every second in emergency mode, upkeep every second); needs and
offers arrive through both; helpers accept through both. Afterwards: batch runs never overlapped
(one leader per tick), no offer holds more than its capacity, nobody was asked twice about a need,
no SMS key twice.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.enums import MatchRunStatus, MatchStatus
from aidmatch.matches.models import Match, MatchRun
from aidmatch.messages.models import Message
from aidmatch.offers.models import Offer
from tests.databases import migrated_database

pytestmark = pytest.mark.postgres


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, list[str], str]]:
    with migrated_database("postgresql", tmp_path) as url:
        exe = str(Path(sys.executable).parent / "aidmatch")
        env = {
            **os.environ,
            "AIDMATCH_DATABASE_URL": url,
            "AIDMATCH_BATCH_INTERVAL_S": "1",
            "AIDMATCH_ESCALATION_INTERVAL_S": "1",
            "AIDMATCH_OUTBOX_INTERVAL_S": "1",
            "AIDMATCH_PUBLIC_POST_BURST": "100000",
        }
        token = subprocess.run(
            [exe, "token", "create", "--role", "coordinator", "two-workers"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        procs, bases, logs = [], [], []
        for k in range(2):
            port = _port()
            logs.append((tmp_path / f"worker{k}.log").open("w"))
            procs.append(
                subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=logs[-1], stderr=logs[-1])
            )
            bases.append(f"http://127.0.0.1:{port}")
        try:
            for base in bases:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if _call("GET", base + "/healthz")[0] == 200:
                            break
                    except OSError:
                        pass
                    assert time.monotonic() < deadline, "a worker did not come up"
                    time.sleep(0.2)
            yield url, bases, token
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
            for log in logs:
                log.close()


def test_two_workers_one_leader_no_oversubscription_no_double_asks(two_workers: tuple[str, list[str], str]) -> None:
    url, bases, token = two_workers
    assert _call("POST", bases[0] + "/api/emergency", {"enabled": True}, token)[0] == 200

    def offer(k: int) -> int:
        body = {
            "categories": ["water", "food"],
            "capacity": 1 + k % 3,
            "radius_km": 30,
            "lat": 55.0 + 0.01 * (k % 10),
            "lon": 40.0 + 0.01 * (k // 10),
            "phone": f"+7916{k:07d}",
        }
        return _call("POST", bases[k % 2] + "/api/offers", body)[0]

    def need(k: int) -> int:
        body = {
            "category": ["water", "food"][k % 2],
            "quantity": 1 + k % 2,
            "urgency": ["normal", "critical"][k % 5 == 0],
            "lat": 55.0 + 0.012 * (k % 9),
            "lon": 40.0 + 0.011 * (k // 9),
        }
        return _call("POST", bases[k % 2] + "/api/needs", body)[0]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(offer, range(30))) == {201}
        assert set(pool.map(need, range(60))) == {201}
    time.sleep(4)  # several scheduler ticks in both workers
    # Helpers accept whatever they were asked, through both workers at once.
    status, body = _call("GET", bases[0] + "/api/matches?status=notified&limit=500", None, token)
    assert status == 200
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda m: _call("POST", f"{bases[m['id'] % 2]}/api/matches/{m['id']}/accept", {}, token)[0],
                body["items"],
            )
        )
    assert codes.count(200) > 0
    assert set(codes) <= {200, 409}
    time.sleep(2)

    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            runs = s.execute(
                select(MatchRun.started_at, MatchRun.finished_at)
                .where(MatchRun.status == MatchRunStatus.succeeded)
                .order_by(MatchRun.started_at)
            ).all()
            assert len(runs) >= 2
            for (_, end), (start, _) in itertools.pairwise(runs):
                assert end is not None
                assert start >= end, "two batch runs overlapped: two leaders in one tick"
            held: Counter[int] = Counter()
            for offer_id, quantity in s.execute(
                select(Match.offer_id, Match.quantity).where(
                    Match.status.in_((MatchStatus.accepted, MatchStatus.completed))
                )
            ):
                held[offer_id] += quantity
            for o in s.scalars(select(Offer)):
                assert held[o.id] <= o.capacity
                assert o.capacity_used == held[o.id]
            pairs = s.execute(
                select(Match.need_id, Offer.helper_id, func.count(Match.id))
                .join(Offer, Offer.id == Match.offer_id)
                .group_by(Match.need_id, Offer.helper_id)
                .having(func.count(Match.id) > 1)
            ).all()
            assert pairs == [], "a helper was asked twice about one need"
            keys = s.execute(
                select(Message.idempotency_key, func.count(Message.id))
                .where(Message.idempotency_key.is_not(None))
                .group_by(Message.idempotency_key)
                .having(func.count(Message.id) > 1)
            ).all()
            assert keys == []
    finally:
        engine.dispose()
