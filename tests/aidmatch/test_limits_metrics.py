"""Abuse limits (429 with Retry-After, 413) and /metrics."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from aidmatch.audit.models import AuditEvent
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.main import create_app
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need
from aidmatch.web import service as web_service
from aidmatch.web.service import triage_queue
from geo.geocoding import GazetteerGeocoder

SHAPE = {"type", "title", "status", "detail", "errors"}


@pytest.fixture
def strict(settings: Settings, gazetteer: GazetteerGeocoder) -> Iterator[TestClient]:
    tight = settings.model_copy(
        update={
            "public_post_burst": 5,
            "public_post_per_min": 60,
            "sms_per_phone_burst": 2,
            "max_request_bytes": 4096,
            "max_open_needs_per_phone": 3,
            "twilio_auth_token": SecretStr("tok"),
        }
    )
    with TestClient(create_app(tight, geocoder=gazetteer)) as client:
        yield client


def _need(k: int, **kw: object) -> dict[str, object]:
    return {"category": "food", "lat": 54.6 + k * 1e-3, "lon": 39.7, **kw}


def test_rapid_public_posts_get_429_with_retry_after(strict: TestClient, db: Session) -> None:
    codes = [strict.post("/api/needs", json=_need(k)).status_code for k in range(12)]
    assert codes[:5] == [201] * 5
    assert 429 in codes
    refused = strict.post("/api/needs", json=_need(99))
    assert refused.status_code == 429
    assert set(refused.json()) == SHAPE
    assert int(refused.headers["Retry-After"]) >= 1
    assert db.scalar(select(func.count(Need.id))) == codes.count(201)  # refused posts wrote nothing
    # Offers and helper sign-ups count against the same client.
    assert strict.post("/api/helpers", json={"name": "x", "phone": "+79161112233"}).status_code == 429
    # Another client (behind no proxy: another address) is not affected; reading is not limited.
    assert strict.get("/healthz").status_code == 200


@pytest.mark.parametrize("hops", [1, 2])
def test_behind_a_proxy_a_client_cannot_dodge_the_limit_with_its_own_forwarded_for(
    settings: Settings, gazetteer: GazetteerGeocoder, hops: int
) -> None:
    """Each proxy of ours appends the address it was called from; what is left of those entries
    the client wrote itself, so a new made-up address per post must not get a new bucket."""
    proxied = settings.model_copy(
        update={"public_post_burst": 2, "public_post_per_min": 1, "trust_forwarded_for": True, "proxy_hops": hops}
    )
    ours = ["203.0.113.7", "10.0.0.2"][:hops]  # the client's address, then our inner proxy's
    with TestClient(create_app(proxied, geocoder=gazetteer)) as client:
        codes = [
            client.post(
                "/api/needs", json=_need(k), headers={"X-Forwarded-For": ", ".join([f"10.9.{k}.1", *ours])}
            ).status_code
            for k in range(4)
        ]
        assert codes == [201, 201, 429, 429]
        # Another client behind the same proxies has a bucket of its own.
        other = client.post(
            "/api/needs", json=_need(9), headers={"X-Forwarded-For": ", ".join(["198.51.100.1", *ours[1:]])}
        )
        assert other.status_code == 201


def test_a_phone_may_hold_only_so_many_open_needs(
    settings: Settings, gazetteer: GazetteerGeocoder, db: Session
) -> None:
    few = settings.model_copy(update={"max_open_needs_per_phone": 3})
    with TestClient(create_app(few, geocoder=gazetteer)) as client:
        far = [_need(0, contact_phone="+79261234567", lat=54.6 + k * 0.02) for k in range(4)]  # 2 km apart: not repeats
        answers = [client.post("/api/needs", json=body) for body in far]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        # Retry-After: until the first of the phone's open needs expires (the limit lifts then at the latest).
        first = db.get(Need, answers[0].json()["id"])
        assert first is not None
        assert first.expires_at is not None
        until_expiry = (first.expires_at - utcnow()).total_seconds()
        assert until_expiry - 60 <= int(answers[3].headers["Retry-After"]) <= until_expiry + 1
        fifth = _need(0, contact_phone="+79261234567", lat=55.0)
        assert "open needs" in client.post("/api/needs", json=fifth).json()["detail"]
        assert client.post("/api/needs", json=_need(6, contact_phone="+79261234568")).status_code == 201


def test_oversized_bodies_get_413(strict: TestClient, db: Session) -> None:
    big = strict.post("/api/needs", json=_need(1, description="я" * 5000))
    assert big.status_code == 413
    assert set(big.json()) == SHAPE
    assert db.scalar(select(func.count(Need.id))) == 0


@pytest.mark.parametrize(
    ("path", "kind"), [("/api/needs", "application/json"), ("/need", "application/x-www-form-urlencoded")]
)
def test_an_oversized_body_sent_in_chunks_gets_413_too(strict: TestClient, db: Session, path: str, kind: str) -> None:
    """No declared length: the body is counted as it streams in; JSON routes must not turn it into a 400."""

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 1000

    refused = strict.post(path, content=chunks(), headers={"content-type": kind})
    assert refused.status_code == 413
    assert set(refused.json()) == SHAPE
    assert db.scalar(select(func.count(Need.id))) == 0


def test_sms_floods_from_one_phone_are_kept_but_not_acted_on(
    strict: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    url = "http://testserver/sms/inbound"
    codes = []
    for k in range(4):
        form = {"MessageSid": f"SMflood{k:026d}", "From": "+79161234567", "Body": "нужна вода, Рязань"}
        signature = RequestValidator("tok").compute_signature(url, form)
        codes.append(strict.post("/sms/inbound", data=form, headers={"X-Twilio-Signature": signature}).status_code)
    assert codes[:2] == [200, 200]
    assert 429 in codes
    assert db.scalar(select(func.count(Message.id))) == 4  # every message kept
    assert db.scalar(select(func.count(Need.id))) == 1  # the second message repeats the first: one need
    # What was held back waits for a coordinator in the triage queue, marked as such: one entry
    # for the phone (a flood must not bury everyone else's), the rest counted beside it.
    held = [k for k, code in enumerate(codes) if code == 429]
    assert len(held) >= 2
    queue = triage_queue(session=db)
    assert [m.provider_sid for m in queue] == [f"SMflood{held[0]:026d}"]
    page = strict.get("/dashboard", headers=coordinator_headers)
    assert page.status_code == 200
    assert page.text.count("слишком много SMS с этого номера") == 1
    assert f"ещё {len(held) - 1} SMS с этого номера не обработано" in page.text
    # A coordinator makes a need of it: the phone's next held-back SMS takes its place in the queue.
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "category": "water", "address": "Рязань", "contact_phone": "+79161234567"}
    made = strict.post(
        f"/dashboard/triage/{queue[0].id}", data=form, headers=coordinator_headers, follow_redirects=False
    )
    assert made.status_code == 303, made.text[:300]
    db.expire_all()
    queue = triage_queue(session=db)
    assert [m.provider_sid for m in queue] == [f"SMflood{k:026d}" for k in held[1:2]]
    # Then dismisses it (not a need): out of the queue with the ones shown beside it, in the log.
    dismiss = f"/dashboard/triage/{queue[0].id}/dismiss"
    assert strict.post(dismiss, data={}, headers=coordinator_headers).status_code == 403  # no form token
    r = strict.post(dismiss, data={"csrf": csrf}, headers=coordinator_headers, follow_redirects=False)
    assert r.status_code == 303
    db.expire_all()
    assert triage_queue(session=db) == []
    statuses = db.scalars(select(Message.status).where(Message.provider_sid.like("SMflood%"))).all()
    assert MessageStatus.unparsed not in statuses
    assert MessageStatus.received not in statuses
    assert db.scalar(select(func.count(Message.id)).where(Message.provider_sid.like("SMflood%"))) == 4  # all kept
    dismissed = db.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "dismissed")).all()
    assert len(dismissed) == len(held) - 1


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    assert client.post("/api/needs", json=_need(1)).status_code == 201
    client.get("/api/needs/1")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'aidmatch_http_requests_total{method="POST",route="/api/needs",status="201"} 1.0' in text
    assert 'route="/api/needs/{need_id}"' in text  # route templates, not raw paths
    assert 'aidmatch_open_needs{category="food",urgency="normal"} 1.0' in text
    assert "aidmatch_http_request_seconds_bucket" in text
    assert "aidmatch_match_runs" in text


def test_an_oversized_body_over_a_real_socket_gets_its_413(
    settings: Settings, gazetteer: GazetteerGeocoder, db: Session
) -> None:
    """A client that writes its whole 1 MB body before reading must still read the 413, not a broken pipe."""
    port = _free_port()
    tight = settings.model_copy(update={"max_request_bytes": 4096, "public_post_burst": 1000})
    server = uvicorn.Server(
        uvicorn.Config(create_app(tight, geocoder=gazetteer), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn died at start"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        body = json.dumps(_need(1, description="x" * 1_000_000)).encode()
        for _ in range(5):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/needs", body, {"Content-Type": "application/json"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=20)
            assert refused.value.code == 413
            assert set(json.loads(refused.value.read())) == SHAPE
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert db.scalar(select(func.count(Need.id))) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serving_sets_the_collectors_thresholds(settings: Settings) -> None:
    import gc

    from aidmatch.main import GC_THRESHOLDS

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with TestClient(create_app(settings)) as client:
            assert client.get("/healthz").status_code == 200
            assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_dismissing_takes_only_what_was_shown_and_keeps_one_entry_per_phone(db: Session) -> None:
    """Two ordinary unparsed SMS of a phone and three held back beside them: dismissing the first
    takes the held-back ones shown (up to the last id shown), not one that came after the page was
    loaded, and promotes none while the phone's other entry still waits."""
    now = utcnow()

    def sms(body: str, status: MessageStatus, held: bool = False) -> Message:
        m = Message(
            direction=MessageDirection.inbound,
            status=status,
            phone="+79161112233",
            body=body,
            parsed={"rate_limited": True} if held else None,
            created_at=now,
            updated_at=now,
        )
        db.add(m)
        db.flush()
        return m

    u1, u2 = sms("привет", MessageStatus.unparsed), sms("алло", MessageStatus.unparsed)
    h1, h2 = sms("вода", MessageStatus.received, held=True), sms("еда", MessageStatus.received, held=True)
    late = sms("одеяла", MessageStatus.received, held=True)  # came after the page was loaded
    db.commit()
    web_service.dismiss(session=db, message_id=u1.id, shown_upto=h2.id)
    db.commit()
    db.expire_all()
    assert [m.id for m in triage_queue(session=db)] == [u2.id]  # one entry for the phone
    assert [db.get(Message, m.id).status for m in (h1, h2, late)] == [  # type: ignore[union-attr]
        MessageStatus.parsed,
        MessageStatus.parsed,
        MessageStatus.received,
    ]
    web_service.dismiss(session=db, message_id=u2.id)  # nothing shown beside it: only itself
    db.commit()
    db.expire_all()
    assert [m.id for m in triage_queue(session=db)] == [late.id]  # now the held-back one comes up


def test_healthz_answers_503_when_the_database_hangs_or_refuses(gazetteer: GazetteerGeocoder) -> None:
    """A database that accepts connections and never answers (or refuses them): /healthz says so
    within HEALTH_TIMEOUT_S instead of hanging, and probes meanwhile share one round trip, so they
    do not take every thread of the pool from the other pages."""
    from concurrent.futures import ThreadPoolExecutor

    from aidmatch.main import HEALTH_TIMEOUT_S

    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts (the kernel does), never speaks
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses
        for sock, reason in ((silent, "did not answer in time"), (closed, "is unreachable")):
            port = sock.getsockname()[1]
            settings = Settings(
                database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
                scheduler_enabled=False,
                _env_file=None,
            )
            client = TestClient(create_app(settings, geocoder=gazetteer), raise_server_exceptions=False)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(client.get, ["/healthz"] * 8))
            took = time.monotonic() - started
            assert [a.status_code for a in answers] == [503] * 8
            assert all(a.json()["detail"] == f"the database {reason}" for a in answers)
            assert took < HEALTH_TIMEOUT_S + 2
            assert client.get("/need").status_code == 200  # pages that need no database still answer


def test_metrics_answer_when_the_database_is_down(gazetteer: GazetteerGeocoder) -> None:
    """A scrape with the database unreachable still answers: the worker's request counters, and
    ``aidmatch_database_up 0`` so an alert can tell the database from the service."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses
        port = closed.getsockname()[1]
        settings = Settings(
            database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", scheduler_enabled=False, _env_file=None
        )
        client = TestClient(create_app(settings, geocoder=gazetteer), raise_server_exceptions=False)
        assert client.get("/need").status_code == 200
        scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert "aidmatch_database_up 0.0" in scrape.text
    assert 'route="/need"' in scrape.text  # the worker's own counters are still there
    assert "aidmatch_open_needs{" not in scrape.text


def test_metrics_say_the_database_is_up(client: TestClient) -> None:
    assert "aidmatch_database_up 1.0" in client.get("/metrics").text
