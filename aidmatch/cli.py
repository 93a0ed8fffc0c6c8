"""The ``aidmatch`` command line. Settings are read from the environment when a command runs."""

from __future__ import annotations

import copy
import os
import secrets
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from aidmatch.config import Settings
from aidmatch.enums import MatchRunStatus, Role

app = typer.Typer(
    name="aidmatch",
    help="Disaster mutual-aid matching engine. Settings come from AIDMATCH_* environment variables or .env.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens for coordinators and volunteers.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Each problem by its setting and message, never pydantic's copy of the values (secrets).
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in error["loc"])
            setting = f"AIDMATCH_{where.upper()}: " if where else ""
            typer.echo(f"aidmatch: bad configuration: {setting}{error['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"aidmatch: bad configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _info(message: str) -> None:
    typer.echo(message, err=True)


def _require_migrated(settings: Settings) -> None:
    from alembic.script import ScriptDirectory

    from aidmatch import migrate

    scripts = ScriptDirectory.from_config(migrate.alembic_config(settings.database_url))
    head = scripts.get_current_head()
    current = migrate.current(settings.database_url)
    if current != head:
        _info(f"aidmatch: the database is at revision {current or 'none'}, the code needs {head}.")
        if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
            # Migrated by a newer release: an upgrade from here cannot find the revision.
            _info("That revision is newer than this aidmatch: run the release that migrated it.")
        else:
            _info("Run `aidmatch db upgrade` first.")
        raise typer.Exit(1)


def _check_port(host: str, port: int) -> None:
    """Stop with one line when ``host:port`` is taken, before anything starts (the scheduler, a seed)."""
    import socket

    if not host:
        return  # every interface: left to uvicorn
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        _info(f"aidmatch: cannot listen on {host}:{port}: {exc.strerror}")
        raise typer.Exit(2) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds "::"
        try:
            probe.bind(address)
        except OSError as exc:
            _info(f"aidmatch: cannot listen on {host}:{port}: {exc.strerror} (another server there? use --port)")
            raise typer.Exit(2) from None


def _serve(settings: Settings, host: str, port: int, workers: int, access_log: bool = False) -> None:
    import uvicorn
    from sqlalchemy.engine import make_url

    if workers > 1 and make_url(settings.database_url).get_backend_name() == "sqlite":
        # SQLite's locks are per process: every worker would run the batch and upkeep jobs.
        _info("aidmatch serve: SQLite serves one worker; use PostgreSQL (AIDMATCH_DATABASE_URL) for --workers > 1.")
        raise typer.Exit(2)
    _require_migrated(settings)
    _check_port(host, port)
    _info(f"aidmatch serving on http://{host}:{port}  (pages: /need /offer /dashboard; API docs: /docs)")
    if workers > 1:
        if not settings.secret_key.get_secret_value():
            # Each worker builds its own app from the environment: without one key, a login cookie
            # and its form tokens would be honoured only by the worker that signed them.
            os.environ["AIDMATCH_SECRET_KEY"] = secrets.token_urlsafe(32)
            _info("aidmatch: no AIDMATCH_SECRET_KEY set; the workers share a random one (logins end on restart).")
        # Each worker builds its own app from the same environment.
        uvicorn.run(
            "aidmatch.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_config=log_config(),
        )
    else:
        from aidmatch.main import create_app

        uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log, log_config=log_config())


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus aidmatch's own loggers at INFO on the same stderr handler: the batch
    runs, the upkeep passes and (with the console sender) every SMS show in the server's output.
    Other libraries stay at WARNING (twilio's client logs whole requests at INFO)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["aidmatch"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]


@app.command()
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="uvicorn's line per request (client address and path; helpers' private links shown as …).",
        ),
    ] = False,
) -> None:
    """Start the web service (the database must be migrated: `aidmatch db upgrade`)."""
    _serve(_settings(), host, port, workers, access_log)


@app.command()
def demo(
    needs: Annotated[int, typer.Option("--needs", min=0, max=1_000_000, help="Needs to generate.")] = 2000,
    offers: Annotated[int, typer.Option("--offers", min=0, max=1_000_000, help="Offers (helpers) to generate.")] = 600,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same scenario.")] = 2010,
    force: Annotated[bool, typer.Option(help="Add the scenario even if the database already has data.")] = False,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the service afterwards.")] = True,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
) -> None:
    """Seed a 2010-style wildfire scenario (Ryazan, Vladimir, Nizhny Novgorod, Moscow oblasts), then serve."""
    from aidmatch import migrate
    from aidmatch.auth import service as auth_service
    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.demo import scenario as scenario_mod
    from aidmatch.demo import service as demo_service
    from aidmatch.emergency import service as emergency_service

    settings = _settings()
    if settings.sms_sender != "console":
        # Demo phone numbers are random and may belong to real people: never text them.
        _info("aidmatch demo: refusing to seed random phone numbers while SMS_SENDER is not 'console'.")
        raise typer.Exit(2)
    if serve_after:
        _check_port(host, port)  # before seeding: a demo that cannot be served is not seeded either
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            session.info["actor"] = "cli"
            if demo_service.database_is_empty(session) or force:
                _info(f"aidmatch demo: generating {needs} needs and {offers} offers (seed {seed})…")
                generated = scenario_mod.generate(needs, offers, seed=seed)
                report = demo_service.seed(session=session, scenario=generated, settings=settings, seed=seed)
                _, token = auth_service.create(session=session, name="demo coordinator", role=Role.coordinator)
                emergency_service.set_mode(session=session, enabled=True, changed_by="demo", note="demo scenario")
                session.commit()
                _info(f"aidmatch demo: seeded {report.needs} needs, {report.helpers} helpers, {report.offers} offers.")
                _info("Emergency mode is on: the batch matcher runs every AIDMATCH_BATCH_INTERVAL_S seconds.")
                _info(f"Coordinator token (shown once): {token}")
                _info(f'  curl -H "Authorization: Bearer {token}" http://{host}:{port}/api/needs')
            else:
                _info("aidmatch demo: the database already has data; not seeding (use --force to add more).")
                _info("Create a coordinator token with: aidmatch token create --role coordinator NAME")
    finally:
        engine.dispose()
    if serve_after:
        _serve(settings, host, port, 1)


@app.command("match")
def match_db(
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as one JSON object.")] = False,
) -> None:
    """Run one batch assignment over all open needs and offers in the database; print the run.

    Runs whether emergency mode is on or not; skips (exit code 3) when another batch run holds
    the leader lock.
    """
    import json

    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.scheduler import batch_job

    settings = _settings()
    _require_migrated(settings)
    engine = make_engine(settings.database_url)
    try:
        outcome = batch_job(
            sessions=make_sessionmaker(engine),
            trigger="cli",
            require_emergency=False,
            time_budget_s=settings.batch_time_budget,
        )
    finally:
        engine.dispose()
    run = outcome.run
    if run is None:
        if as_json:
            typer.echo(json.dumps({"status": "skipped", "reason": outcome.skipped}))
        else:
            typer.echo(f"skipped: {outcome.skipped}")
        raise typer.Exit(3)
    summary = {
        "run_id": run.id,
        "status": run.status.value,
        "needs": run.needs_count,
        "offers": run.offers_count,
        "matched_needs": run.matched_needs,
        "unmatched_needs": run.unmatched_needs,
        "assigned_quantity": run.assigned_quantity,
        "total_distance_km": round(run.total_distance_km, 3),
        "unmatched_reasons": run.unmatched_reasons,
        "timings_s": run.timings_s,
        "error": run.error,
    }
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    elif run.status is not MatchRunStatus.succeeded:
        typer.echo(f"run {run.id} failed: {run.error}")
    else:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(run.unmatched_reasons.items())) or "none"
        typer.echo(
            f"run {run.id}: {run.matched_needs} of {run.needs_count} open needs matched "
            f"({run.assigned_quantity} units, {run.total_distance_km:.1f} km) by {run.offers_count} offers; "
            f"unmatched {run.unmatched_needs} ({reasons}); {sum(run.timings_s.values()):.2f} s"
        )
    if run.status is not MatchRunStatus.succeeded:
        raise typer.Exit(1)


class Switch(StrEnum):
    on = "on"
    off = "off"
    status = "status"


@app.command("emergency")
def emergency(
    switch: Annotated[Switch, typer.Argument(help="on, off, or status.")] = Switch.status,
    note: Annotated[str | None, typer.Option(help="Why (shown to coordinators).")] = None,
) -> None:
    """Emergency mode: while on, every worker's scheduler runs the batch matcher every BATCH_INTERVAL_S."""
    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.emergency import service as emergency_service

    settings = _settings()
    _require_migrated(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            session.info["actor"] = "cli"
            if switch is Switch.status:
                mode = emergency_service.get(session=session)
            else:
                mode = emergency_service.set_mode(
                    session=session, enabled=switch is Switch.on, changed_by="cli", note=note
                )
                session.commit()
    finally:
        engine.dispose()
    since = f" since {mode.changed_at:%Y-%m-%d %H:%M} UTC by {mode.changed_by}" if mode.changed_at else ""
    typer.echo(f"emergency mode {'on' if mode.enabled else 'off'}{since}" + (f" ({mode.note})" if mode.note else ""))


@app.command("upkeep")
def upkeep() -> None:
    """One pass of expiry, timeouts and escalation waves (the scheduler does this every ESCALATION_INTERVAL_S)."""
    import json

    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.matches.live import LiveOfferIndex
    from aidmatch.scheduler import upkeep_job

    settings = _settings()
    _require_migrated(settings)
    engine = make_engine(settings.database_url)
    try:
        report = upkeep_job(sessions=make_sessionmaker(engine), settings=settings, live=LiveOfferIndex())
    finally:
        engine.dispose()
    if report is None:
        typer.echo("skipped: another worker holds the upkeep lock")
        raise typer.Exit(3)
    typer.echo(json.dumps(report.as_dict()))


@app.command("match-file")
def match_file(
    needs_csv: Annotated[Path, typer.Argument(help="needs.csv: id,lat,lon,category[,quantity,urgency]")],
    offers_csv: Annotated[Path, typer.Argument(help="offers.csv: id,lat,lon,categories,radius_km[,capacity]")],
    out: Annotated[Path, typer.Option("--out", help="Where to write need_id,offer_id,quantity,distance_km.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary object to stdout.")] = False,
) -> None:
    """Run the batch matcher on CSV files, without a database."""
    import json

    from aidmatch.errors import InvalidInputError
    from aidmatch.matchfile import match_files

    try:
        summary = match_files(needs_csv, offers_csv, out)
    except (InvalidInputError, ValueError) as exc:
        _info(f"aidmatch match-file: {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"{summary.matched_needs} of {summary.needs} needs matched ({summary.assigned_quantity} units) "
            f"by {summary.offers} offers; {summary.unmatched_needs} unmatched; "
            f"{summary.total_distance_km:.1f} km in all; matching took {summary.seconds:.3f} s; wrote {out}"
        )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the database schema to the latest (or given) revision."""
    from alembic.util.exc import CommandError

    from aidmatch import migrate

    settings = _settings()
    try:
        migrate.upgrade(settings.database_url, revision)
    except CommandError as exc:  # an unknown target, or a database migrated by a newer release
        _info(f"aidmatch db upgrade: {exc}")
        raise typer.Exit(2) from None
    _info(f"aidmatch: database at revision {migrate.current(settings.database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from aidmatch import migrate

    typer.echo(migrate.current(_settings().database_url) or "none")


TOKEN_NAME_MAX = 200  # api_tokens.name


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who the token is for (shown in logs and audits).")],
    role: Annotated[Role, typer.Option(help="coordinator: everything; volunteer: no contact data.")],
) -> None:
    """Create a bearer token and print it (only its hash is stored; it cannot be shown again)."""
    from aidmatch.auth import service as auth_service
    from aidmatch.database import make_engine, make_sessionmaker

    name = name.strip()
    if not name or len(name) > TOKEN_NAME_MAX or not name.isprintable():
        _info(f"aidmatch token create: NAME must be 1 to {TOKEN_NAME_MAX} printable characters")
        raise typer.Exit(2)
    settings = _settings()
    _require_migrated(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            session.info["actor"] = "cli"
            row, token = auth_service.create(session=session, name=name, role=role)
            session.commit()
            _info(f"token {row.id} for {name!r} ({role.value}); send it as 'Authorization: Bearer <token>':")
    finally:
        engine.dispose()
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    """List tokens (ids, names, roles; never the tokens themselves)."""
    from aidmatch.auth import service as auth_service
    from aidmatch.database import make_engine, make_sessionmaker

    settings = _settings()
    _require_migrated(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            session.info["actor"] = "cli"
            for t in auth_service.list_tokens(session=session):
                state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
                typer.echo(f"{t.id}\t{t.role.value}\t{state}\t{t.name}")
    finally:
        engine.dispose()


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id from `aidmatch token list`.")]) -> None:
    """Revoke a token at once."""
    from aidmatch.auth import service as auth_service
    from aidmatch.database import make_engine, make_sessionmaker

    settings = _settings()
    _require_migrated(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            session.info["actor"] = "cli"
            if not auth_service.revoke(session=session, token_id=token_id):
                _info(f"aidmatch: no active token with id {token_id}")
                raise typer.Exit(1)
            session.commit()
            _info(f"token {token_id} revoked")
    finally:
        engine.dispose()


def main() -> None:
    try:
        app(prog_name="aidmatch")
    except OperationalError as exc:
        # The database unreachable, refusing the login, gone, or failing the statement (a schema
        # edited by hand, a deadlock): one line, not a traceback (the statement's parameters are
        # hidden by the engine; the URL's password is not in the driver's message).
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        unreachable = any(w in reason.lower() for w in ("connect", "unable to open", "translate host", "timeout"))
        what = "the database is not available" if unreachable else "the database failed the command"
        typer.echo(f"aidmatch: {what}: {reason}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
