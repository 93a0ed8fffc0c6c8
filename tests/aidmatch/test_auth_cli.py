"""Tokens and the command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from aidmatch import migrate
from aidmatch.auth.models import ApiToken
from aidmatch.cli import app
from aidmatch.config import Settings

runner = CliRunner()


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> float:
    """Wait (up to 30 s) for ``aidmatch serve`` to answer /healthz; returns that deadline."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return deadline
        except OSError:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "aidmatch serve did not answer within 30 s"
            time.sleep(0.3)


def _env(url: str) -> dict[str, str]:
    return {"AIDMATCH_DATABASE_URL": url}


def test_token_create_prints_a_working_token_and_stores_only_its_hash(
    settings: Settings, client: TestClient, db: Session
) -> None:
    result = runner.invoke(app, ["token", "create", "--role", "coordinator", "Ольга"], env=_env(settings.database_url))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().split()[-1]
    assert token.startswith("am_")
    rows = list(db.scalars(select(ApiToken)))
    assert [(r.name, r.role.value) for r in rows] == [("Ольга", "coordinator")]
    assert token not in rows[0].token_hash
    ok = client.get("/api/helpers", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200

    listed = runner.invoke(app, ["token", "list"], env=_env(settings.database_url))
    assert "Ольга" in listed.stdout
    assert token not in listed.stdout
    revoked = runner.invoke(app, ["token", "revoke", str(rows[0].id)], env=_env(settings.database_url))
    assert revoked.exit_code == 0
    assert client.get("/api/helpers", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    again = runner.invoke(app, ["token", "revoke", str(rows[0].id)], env=_env(settings.database_url))
    assert again.exit_code == 1


def test_token_create_refuses_an_unknown_role(settings: Settings) -> None:
    result = runner.invoke(app, ["token", "create", "--role", "admin", "x"], env=_env(settings.database_url))
    assert result.exit_code != 0


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["demo"], ["db"], ["db", "upgrade"], ["token"], ["token", "create"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    assert len(result.output.splitlines()) > 3


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--port", "1"], env=_env(f"sqlite:///{tmp_path / 'new.db'}"))
    assert result.exit_code == 1
    assert "aidmatch db upgrade" in result.output


def test_serve_with_workers_needs_postgresql_and_gives_them_one_secret(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    started: list[tuple[str | None, int]] = []

    def run(app_ref: Any, **kwargs: Any) -> None:  # what each worker would read from the environment
        started.append((os.environ.get("AIDMATCH_SECRET_KEY"), kwargs["workers"]))

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.delenv("AIDMATCH_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["serve", "--port", "1", "--workers", "2"], env=_env(settings.database_url))
    if settings.database_url.startswith("sqlite"):
        assert result.exit_code == 2
        assert "PostgreSQL" in result.output
        assert started == []
        return
    assert result.exit_code == 0, result.output
    [(secret, workers)] = started
    assert workers == 2
    assert secret is not None
    assert len(secret) >= 32  # one random key for every worker, so a login works on each


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    current = runner.invoke(app, ["db", "current"], env=env)
    head = ScriptDirectory.from_config(migrate.alembic_config(env["AIDMATCH_DATABASE_URL"])).get_current_head()
    assert head is not None
    assert current.stdout.strip() == head


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade"], env={"AIDMATCH_DATABASE_URL": "mysql://x"})
    assert result.exit_code == 2
    assert "database_url" in result.output


def test_console_script_serves_demo_needs(tmp_path: Path) -> None:
    """The installed `aidmatch` script end to end: demo seeds, serve answers with those needs."""
    import json
    import socket
    import time
    import urllib.request

    exe = Path(sys.executable).parent / "aidmatch"
    env = {
        **os.environ,
        "AIDMATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "AIDMATCH_BATCH_INTERVAL_S": "1",
    }
    seeded = subprocess.run(
        [str(exe), "demo", "--needs", "40", "--offers", "15", "--no-serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    token = next(line.split()[-1] for line in seeded.stderr.splitlines() if "Coordinator token" in line)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/needs?limit=100", headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(req, timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "aidmatch serve did not answer within 30 s"
                time.sleep(0.3)
        assert body["total"] == 40
        assert all(item["contact_phone"].startswith("+7") for item in body["items"])
        # The demo switched emergency mode on: the served app's scheduler runs the batch by itself.
        runs: dict[str, Any] = {"items": []}
        while not runs["items"] and time.monotonic() < deadline + 30:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/runs", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                runs = json.loads(r.read())
            time.sleep(0.3)
        assert runs["items"], "no scheduled batch run within 30 s of serving the demo"
        assert runs["items"][-1]["trigger"] == "scheduler"
        assert runs["items"][-1]["status"] == "succeeded"
        # A second demo run on a non-empty database does not seed again.
        again = subprocess.run(
            [str(exe), "demo", "--no-serve"], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert again.returncode == 0
        assert "not seeding" in again.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.parametrize("access_log", [False, True])
def test_serve_logs_requests_only_when_asked_and_never_a_private_link(tmp_path: Path, access_log: bool) -> None:

    exe = Path(sys.executable).parent / "aidmatch"
    env = {**os.environ, "AIDMATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "AIDMATCH_SCHEDULER_ENABLED": "0"}
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "serve.log"
    flag = "--access-log" if access_log else "--no-access-log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), flag], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_until_serving(proc, port, log_path)
            secret = "s3cretLinkOfAHelper"
            with pytest.raises(urllib.error.HTTPError):  # no helper has it: 404, but the request is made
                urllib.request.urlopen(f"http://127.0.0.1:{port}/tasks/{secret}?x=1", timeout=5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = log_path.read_text()
    assert secret not in text
    assert ("GET /tasks/…?x=1" in text) is access_log
    assert ("GET /healthz" in text) is access_log


def test_serve_shows_what_the_console_sender_sends(tmp_path: Path) -> None:
    """The default sender "logs and stores": its SMS show in the server's output (aidmatch's
    loggers at INFO), without any other library's chatter."""
    exe = Path(sys.executable).parent / "aidmatch"
    env = {
        **os.environ,
        "AIDMATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "AIDMATCH_OUTBOX_INTERVAL_S": "0.5",
    }
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = _wait_until_serving(proc, port, log_path)
            body = {
                "categories": ["water"],
                "capacity": 1,
                "radius_km": 30,
                "lat": 55.0,
                "lon": 40.0,
                "phone": "+79161234567",
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/offers", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=10).read()
            while "SMS to +79161234567" not in log_path.read_text():  # the sign-up notice, sent by the outbox
                assert time.monotonic() < deadline + 30, log_path.read_text()
                time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "apscheduler" not in log_path.read_text()


@pytest.mark.parametrize("command", [["db", "current"], ["token", "list"], ["match"]])
def test_an_unreachable_database_is_one_line_not_a_traceback(command: list[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses
        port = closed.getsockname()[1]
        env = {**os.environ, "AIDMATCH_DATABASE_URL": f"postgresql+psycopg://postgres:S3cretPW@127.0.0.1:{port}/x"}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "aidmatch"), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.startswith("aidmatch: the database is not available:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "S3cretPW" not in done.stderr + done.stdout


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "bad\x07name"])
def test_a_token_name_that_cannot_be_stored_is_refused_plainly(name: str, tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path / 'x.db'}")
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(app, ["token", "create", name, "--role", "coordinator"], env=env)
    assert result.exit_code == 2
    assert "NAME must be 1 to 200 printable characters" in result.output


def test_serve_and_demo_on_a_taken_port_stop_before_starting_or_seeding(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    env = {**_env(url), "AIDMATCH_SCHEDULER_ENABLED": "0"}
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        served = runner.invoke(app, ["serve", "--port", port], env=env)
        demo = runner.invoke(app, ["demo", "--port", port, "--needs", "50", "--offers", "20"], env=env)
    for result in (served, demo):
        assert result.exit_code == 2
        assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "seeded" not in demo.output  # nothing seeded for a demo that could not be served
    settings = Settings(database_url=url, _env_file=None)
    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.demo import service as demo_service

    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        assert demo_service.database_is_empty(session)
    engine.dispose()


def test_a_database_newer_than_the_code_is_told_so(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'x.db'}"
    env = _env(url)
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))  # as a newer release leaves it
    engine.dispose()
    listed = runner.invoke(app, ["token", "list"], env=env)
    assert listed.exit_code == 1
    assert "newer than this aidmatch" in listed.output
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 2
    assert "Can't locate revision" in upgraded.output
    assert upgraded.exception is None or isinstance(upgraded.exception, SystemExit)  # no traceback


def test_a_statement_the_database_fails_is_one_line_naming_it(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert runner.invoke(app, ["db", "upgrade"], env=_env(url)).exit_code == 0
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE api_tokens RENAME COLUMN name TO renamed_by_hand"))
    engine.dispose()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aidmatch"), "token", "list"],
        env={**os.environ, **_env(url)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("aidmatch: the database failed the command: no such column"), done.stderr
