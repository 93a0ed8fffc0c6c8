"""The whole service process SIGKILLed in the middle of a scheduled batch run, then restarted.

The first `aidmatch serve` gets a ``sitecustomize`` (test-only, on PYTHONPATH) that makes the
batch pause right after writing its matches and SMS, before commit; the test kills it there.
Afterwards: no run, match or message of the killed batch; every need still there; the restarted
service runs the batch by itself and its outbox drain (console sender) sends every SMS, each
idempotency key once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.enums import MatchRunStatus, MessageDirection, MessageStatus
from aidmatch.matches.models import Match, MatchRun
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need

PAUSE_AT_WRITE = """
import os, time
from pathlib import Path
from typing import Any
from aidmatch.matches import service

_write = service._write_batch_matches


def _write_then_hang(**kwargs):
    kept, count = _write(**kwargs)
    if count:
        # Written whole, then renamed: the test polls for the file and must never read it half done.
        marker = Path(os.environ["AIDMATCH_TEST_MARKER"])
        partial = marker.with_suffix(".partial")
        partial.write_text(str(count))
        partial.replace(marker)
        time.sleep(300)
    return kept, count


service._write_batch_matches = _write_then_hang
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count(db: Session, column: Any, *where: Any) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count(column)).where(*where)) or 0)


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    exe = str(Path(sys.executable).parent / "aidmatch")
    with log.open("w") as out:
        proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return proc, base
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "aidmatch serve did not come up"
            time.sleep(0.2)


def test_the_service_killed_mid_batch_loses_nothing_and_finishes_after_restart(
    settings: Settings, db: Session, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "AIDMATCH_DATABASE_URL": settings.database_url,
        "AIDMATCH_BATCH_INTERVAL_S": "1",
        "AIDMATCH_OUTBOX_INTERVAL_S": "1",
        "AIDMATCH_SMS_RATE_PER_S": "1000",
        "AIDMATCH_PUBLIC_POST_BURST": "100000",
        # The helpers' sign-up SMS may be mid-send when the kill comes: looked at again soon.
        "AIDMATCH_SMS_STALE_SENDING_S": "2",
    }
    exe = str(Path(sys.executable).parent / "aidmatch")
    patch_dir = tmp_path / "patch"
    patch_dir.mkdir()
    (patch_dir / "sitecustomize.py").write_text(PAUSE_AT_WRITE)
    marker = tmp_path / "written"
    first_env = {**env, "PYTHONPATH": str(patch_dir), "AIDMATCH_TEST_MARKER": str(marker)}
    proc, base = _serve(first_env, tmp_path / "first.log")
    try:
        # Needs first, then helpers: nothing is asked at intake, so the batch has the work.
        for k in range(20):
            body = {"category": "water", "quantity": 1, "lat": 55.0 + 0.01 * k, "lon": 40.0}
            req = urllib.request.Request(
                base + "/api/needs", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=30).read()
        for k in range(8):
            body = {
                "categories": ["water"],
                "capacity": 2,
                "radius_km": 40,
                "lat": 55.0 + 0.02 * k,
                "lon": 40.01,
                "phone": f"+7916{k:07d}",
            }
            req = urllib.request.Request(
                base + "/api/offers", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=30).read()
        # Emergency mode on only now: a batch caught between two offers would hold SQLite's
        # write lock while it hangs and the next POST would wait for it.
        subprocess.run([exe, "emergency", "on"], env=env, check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the scheduled batch never reached its write"
        assert int(marker.read_text()) > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert _count(db, MatchRun.id) == 0
    assert _count(db, Match.id) == 0
    assert _count(db, Message.id, Message.direction == MessageDirection.outbound, Message.match_id.is_not(None)) == 0
    assert _count(db, Need.id) == 20
    proc, base = _serve(env, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = _count(db, MatchRun.id, MatchRun.status == MatchRunStatus.succeeded) > 0
            queued = _count(db, Message.id, Message.status.in_([MessageStatus.queued, MessageStatus.sending]))
            if done and queued == 0 and _count(db, Message.id) > 0:
                break
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert _count(db, MatchRun.id, MatchRun.assigned_quantity > 0) == 1
    assert _count(db, Match.id) == 16  # 8 helpers × 2 units, one unit per need
    outbound = db.execute(
        select(Message.idempotency_key, Message.status).where(Message.direction == MessageDirection.outbound)
    ).all()
    assert len([k for k, _ in outbound if k.startswith("match:")]) == 16
    assert len([k for k, _ in outbound if k.endswith(":signed-up")]) == 8
    assert len({k for k, _ in outbound}) == 24  # one SMS per key
    assert {s for _, s in outbound} == {MessageStatus.sent}  # every one eventually sent
    assert _count(db, Need.id) == 20
