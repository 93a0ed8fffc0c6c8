"""Emergency mode, the scheduled jobs, one leader at a time, and a batch run killed halfway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import matching
from aidmatch.cli import app as cli
from aidmatch.config import Settings
from aidmatch.enums import MatchRunStatus
from aidmatch.main import create_app
from aidmatch.matches.models import Match, MatchRun
from aidmatch.messages.models import Message
from aidmatch.scheduler import BatchOutcome, batch_job
from geo.geocoding import GazetteerGeocoder


def _scene(client: TestClient, needs: int = 12, offers: int = 8) -> None:
    """Needs first, then offers, so nothing is asked at intake and the batch has work."""
    for k in range(needs):
        r = client.post(
            "/api/needs",
            json={"category": "water", "quantity": 1 + k % 2, "urgency": "normal", "lat": 55.1 + 0.01 * k, "lon": 40.5},
        )
        assert r.status_code == 201, r.text
    for k in range(offers):
        r = client.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 2,
                "radius_km": 30,
                "lat": 55.1 + 0.015 * k,
                "lon": 40.55,
                "phone": f"+7916{k:07d}",
            },
        )
        assert r.status_code == 201, r.text


def _count(db: Session, column: Any) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count(column))) or 0)


def test_emergency_mode_by_api_and_cli(
    client: TestClient,
    settings: Settings,
    coordinator_headers: dict[str, str],
    volunteer_headers: dict[str, str],
) -> None:
    assert client.get("/api/emergency").status_code == 401
    assert client.get("/api/emergency", headers=volunteer_headers).status_code == 403
    assert client.post("/api/emergency", json={"enabled": True}, headers=volunteer_headers).status_code == 403
    off = client.get("/api/emergency", headers=coordinator_headers).json()
    assert off["enabled"] is False
    assert off["batch_interval_s"] == settings.batch_interval_s
    on = client.post("/api/emergency", json={"enabled": True, "note": "пожары"}, headers=coordinator_headers)
    assert on.status_code == 200
    assert on.json()["enabled"] is True
    assert on.json()["changed_by"] == "test coordinator"
    bad = client.post("/api/emergency", json={"enabled": "maybe"}, headers=coordinator_headers)
    assert bad.status_code == 422
    env = {"AIDMATCH_DATABASE_URL": settings.database_url}
    status = CliRunner().invoke(cli, ["emergency"], env=env)
    assert status.exit_code == 0
    assert status.stdout.startswith("emergency mode on")
    assert "пожары" in status.stdout
    assert CliRunner().invoke(cli, ["emergency", "off"], env=env).exit_code == 0
    assert client.get("/api/emergency", headers=coordinator_headers).json()["enabled"] is False


def test_the_batch_job_runs_only_in_emergency_mode(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    _scene(client)
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]
    assert batch_job(sessions=sessions) == BatchOutcome(None, "emergency mode is off")
    assert _count(db, MatchRun.id) == 0
    client.post("/api/emergency", json={"enabled": True}, headers=coordinator_headers)
    outcome = batch_job(sessions=sessions)
    assert outcome.run is not None
    assert outcome.run.status is MatchRunStatus.succeeded
    assert outcome.run.assigned_quantity > 0
    assert _count(db, Match.id) > 0


def test_two_batch_runs_started_at_once_one_runs_one_skips(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scene(client)
    real = matching.match
    inside = threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        time.sleep(1.0)  # hold the leader lock long enough for the other run to try
        return real(*args, **kwargs)

    monkeypatch.setattr(matching, "match", slow)
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]
    outcomes: list[BatchOutcome] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        outcomes.append(batch_job(sessions=sessions, require_emergency=False, trigger="test"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert inside.is_set()
    ran = [o for o in outcomes if o.run is not None]
    skipped = [o for o in outcomes if o.run is None]
    assert len(ran) == 1
    assert len(skipped) == 1
    assert skipped[0].skipped == "another batch run holds the leader lock"
    assert _count(db, MatchRun.id) == 1
    # The lock goes with the transaction: the next run gets it.
    monkeypatch.setattr(matching, "match", real)
    assert batch_job(sessions=sessions, require_emergency=False).run is not None


def test_the_batch_time_budget_setting_reaches_the_run(client: TestClient, db: Session) -> None:
    _scene(client)
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]
    assert Settings(batch_time_budget_s=0, _env_file=None).batch_time_budget is None
    budget = Settings(batch_time_budget_s=7.5, _env_file=None).batch_time_budget
    first = batch_job(sessions=sessions, require_emergency=False, time_budget_s=budget).run
    unlimited = batch_job(sessions=sessions, require_emergency=False, time_budget_s=None).run
    assert first is not None
    assert unlimited is not None
    db.expire_all()
    assert db.get(MatchRun, first.id).config["time_budget_s"] == 7.5  # type: ignore[union-attr]
    assert db.get(MatchRun, unlimited.id).config["time_budget_s"] is None  # type: ignore[union-attr]


def test_a_failed_run_is_recorded_and_writes_nothing_else(
    client: TestClient, db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scene(client)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(matching, "match", broken)
    outcome = batch_job(sessions=client.app.state.sessionmaker, require_emergency=False)  # type: ignore[attr-defined]
    assert outcome.run is not None
    assert outcome.run.status is MatchRunStatus.failed
    assert outcome.run.error == "RuntimeError: solver exploded"
    assert _count(db, MatchRun.id) == 1
    assert _count(db, Match.id) == 0
    result = CliRunner().invoke(cli, ["match"], env={"AIDMATCH_DATABASE_URL": settings.database_url})
    assert result.exit_code == 1
    assert "solver exploded" in result.stdout


def test_the_scheduler_runs_batches_by_itself_once_emergency_mode_is_on(
    settings: Settings, gazetteer: GazetteerGeocoder, db: Session, coordinator_headers: dict[str, str]
) -> None:
    fast = settings.model_copy(
        update={"scheduler_enabled": True, "batch_interval_s": 0.2, "escalation_interval_s": 0.2}
    )
    with TestClient(create_app(fast, geocoder=gazetteer)) as client:
        _scene(client)
        time.sleep(1.0)  # several ticks with emergency mode off: no run
        assert _count(db, MatchRun.id) == 0
        client.post("/api/emergency", json={"enabled": True}, headers=coordinator_headers)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _count(db, MatchRun.id) == 0:
            time.sleep(0.1)
        runs = list(db.scalars(select(MatchRun)))
        assert runs, "no batch run within 20 s of switching emergency mode on"
        assert runs[0].trigger == "scheduler"
        assert runs[0].status is MatchRunStatus.succeeded
    assert _count(db, Match.id) > 0


_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aidmatch.config import Settings
    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.matches import service
    from aidmatch.scheduler import batch_job

    marker = Path(sys.argv[2])
    write = service._write_batch_matches

    def write_then_hang(**kwargs):
        kept, count = write(**kwargs)  # the run's matches and messages are written, not yet committed
        # Written whole, then renamed: the test polls for the file and must never read it half done.
        partial = marker.with_suffix(".partial")
        partial.write_text(str(count))
        partial.replace(marker)
        time.sleep(120)
        return kept, count

    service._write_batch_matches = write_then_hang
    engine = make_engine(Settings(database_url=sys.argv[1], _env_file=None).database_url)
    batch_job(sessions=make_sessionmaker(engine), trigger="doomed", require_emergency=False)
    """
)


def test_a_batch_run_killed_halfway_leaves_nothing_behind(
    client: TestClient, db: Session, settings: Settings, tmp_path: Path
) -> None:
    _scene(client, needs=40, offers=20)
    before = (_count(db, MatchRun.id), _count(db, Match.id), _count(db, Message.id))
    url = settings.database_url
    script = tmp_path / "killed_run.py"
    script.write_text(_KILLED_RUN)
    marker = tmp_path / "written"
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(marker)], env={**os.environ, "AIDMATCH_SCHEDULER_ENABLED": "false"}
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run never reached the point of writing"
        assert int(marker.read_text()) > 0  # it had SMS queued in its transaction
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (_count(db, MatchRun.id), _count(db, Match.id), _count(db, Message.id)) == before
    # The killed run held no lock that outlived it: the next run goes ahead and writes everything.
    outcome = batch_job(sessions=client.app.state.sessionmaker, require_emergency=False)  # type: ignore[attr-defined]
    assert outcome.run is not None
    assert outcome.run.status is MatchRunStatus.succeeded
    assert _count(db, Message.id) == before[2] + outcome.run.config["messages"] > before[2]


def test_an_upkeep_pass_that_rolls_back_leaves_no_trace_in_the_live_index(
    client: TestClient,
    db: Session,
    settings: Settings,
    coordinator_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    from aidmatch.database import make_engine, make_sessionmaker, utcnow
    from aidmatch.matches.live import LiveOfferIndex
    from aidmatch.needs.models import Need
    from aidmatch.scheduler import upkeep_job

    client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 1,
            "radius_km": 50,
            "lat": 55.75,
            "lon": 37.61,
            "phone": "+79160000001",
        },
    ).json()
    need = client.post(
        "/api/needs",
        json={"category": "water", "quantity": 2, "lat": 55.751, "lon": 37.611, "contact_phone": "+79169999999"},
    ).json()
    (match,) = client.get(f"/api/matches?need_id={need['id']}", headers=coordinator_headers).json()["items"]
    assert client.post(f"/api/matches/{match['id']}/accept", headers=coordinator_headers).status_code == 200
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    live = LiveOfferIndex()

    def free_units() -> list[int]:
        with sessions() as session:
            live.refresh(session=session, now=utcnow())
        _, left = live.snapshot({})
        return [int(x) for x in left]

    try:
        assert free_units() == [0]  # the offer's one unit is taken
        expired = db.get(Need, need["id"])
        assert expired is not None
        assert expired.expires_at is not None
        later = expired.expires_at + timedelta(minutes=1)  # the pass expires the need: its task is called off
        real = LiveOfferIndex.refresh

        def refresh_then_fail(self: LiveOfferIndex, *, session: Session, now: Any) -> None:
            real(self, session=session, now=now)  # sees the unit given back, not yet committed
            raise RuntimeError("connection lost")

        monkeypatch.setattr(LiveOfferIndex, "refresh", refresh_then_fail)
        with pytest.raises(RuntimeError):
            upkeep_job(sessions=sessions, settings=settings, live=live, now=later)
        monkeypatch.setattr(LiveOfferIndex, "refresh", real)
        assert free_units() == [0]  # the pass was rolled back: the unit is still taken
    finally:
        engine.dispose()


def test_two_first_switches_of_emergency_mode_at_once_both_succeed(settings: Settings, sessions: Any) -> None:
    """No stored switch yet: two coordinators (or a coordinator and the CLI) switch at once. Both
    succeed, one after the other, instead of one failing on the row the other created."""
    from aidmatch.emergency import service as emergency_service

    outcome: list[Any] = []

    def switch_off() -> None:
        with sessions() as s:
            try:
                outcome.append(emergency_service.set_mode(session=s, enabled=False, changed_by="b", note="drill"))
                s.commit()
            except Exception as exc:  # the failure is what this test looks for
                outcome.append(exc)

    with sessions() as first:
        assert emergency_service.set_mode(session=first, enabled=True, changed_by="a").enabled  # not committed yet
        other = threading.Thread(target=switch_off)
        other.start()
        other.join(0.5)  # it waits for the first switch's row (or, on SQLite, for the write lock)
        first.commit()
    other.join(30)
    (off,) = outcome
    assert isinstance(off, emergency_service.EmergencyMode), off
    assert (off.enabled, off.changed_by, off.note) == (False, "b", "drill")
    with sessions() as s:
        assert not emergency_service.get(session=s).enabled
