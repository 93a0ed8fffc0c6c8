"""The outbox drain: the real twilio client against a fake Twilio, rate limit, retries, STOP, crashes."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.enums import MessageStatus
from aidmatch.main import create_app
from aidmatch.messages import outbox
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message, SmsOptOut
from aidmatch.messages.outbox import DrainReport, backoff_s, drain
from aidmatch.messages.ratelimit import SharedTokenBucket
from notifications.ratelimit import TokenBucket
from notifications.senders import FakeSender, Sent, TwilioSender, UnknownOutcomeError
from tests.fake_twilio import FakeTwilio, fake_twilio

ACCOUNT = "AC" + "3" * 32


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with fake_twilio() as server:
        yield server


def _sender(twilio: FakeTwilio) -> TwilioSender:
    return TwilioSender(account_sid=ACCOUNT, auth_token="t0ken", from_="+15005550006", base_url=twilio.base_url)


def _queue(sessions: sessionmaker[Session], n: int, phone: str = "+79161234567", prefix: str = "m") -> list[int]:
    with sessions() as session:
        ids = [
            messages_service.queue(
                session=session,
                phone=phone,
                body=f"Сообщение {prefix}{i}",
                language="ru",
                idempotency_key=f"{prefix}:{i}",
            ).id
            for i in range(n)
        ]
        session.commit()
    return ids


def _messages(db: Session) -> list[Message]:
    db.expire_all()
    return list(db.scalars(select(Message).order_by(Message.id)))


def _bucket(rate: float = 1000.0, burst: float = 1000.0) -> TokenBucket:
    return TokenBucket(rate, burst)


def test_queued_messages_go_out_through_twilio_once(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    _queue(sessions, 3)
    report = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket())
    assert report.sent == 3
    stored = _messages(db)
    assert [m.status for m in stored] == [MessageStatus.sent] * 3
    assert [m.provider_sid for m in stored] == [m["sid"] for m in twilio.messages]
    assert [r["form"]["Body"] for r in twilio.requests] == ["Сообщение m0", "Сообщение m1", "Сообщение m2"]
    assert all(r["form"]["StatusCallback"] == "http://testserver/sms/status" for r in twilio.requests)
    assert drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket()).claimed == 0
    assert len(twilio.messages) == 3


def test_the_rate_limit_holds_messages_back(sessions: sessionmaker[Session], settings: Settings, db: Session) -> None:
    _queue(sessions, 5)
    now = [0.0]
    bucket = TokenBucket(1.0, burst=2, clock=lambda: now[0])
    fake = FakeSender()
    assert drain(sessions=sessions, sender=fake, settings=settings, bucket=bucket).sent == 2
    assert drain(sessions=sessions, sender=fake, settings=settings, bucket=bucket).sent == 0
    now[0] += 1.0
    assert drain(sessions=sessions, sender=fake, settings=settings, bucket=bucket).sent == 1
    assert Counter(m.status for m in _messages(db)) == {MessageStatus.sent: 3, MessageStatus.queued: 2}


def test_transient_errors_back_off_and_retry(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    _queue(sessions, 1)
    twilio.fail_next(429, 20429)
    now = utcnow()
    report = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=now)
    assert report.retried == 1
    (message,) = _messages(db)
    assert message.status is MessageStatus.queued
    assert message.attempts == 1
    assert message.send_after == now + timedelta(seconds=backoff_s(settings, 1))
    assert "20429" in (message.error or "")
    early = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=now)
    assert early.claimed == 0  # not due yet
    later = now + timedelta(seconds=backoff_s(settings, 1) + 1)
    assert drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=later).sent == 1
    (message,) = _messages(db)
    assert message.status is MessageStatus.sent
    assert message.attempts == 2
    assert backoff_s(settings, 2) == 2 * backoff_s(settings, 1)
    assert backoff_s(settings, 40) == 3600


def test_permanent_errors_are_not_retried_and_unsubscribed_phones_are_remembered(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    _queue(sessions, 1, phone="+79160000001", prefix="bad")
    _queue(sessions, 1, phone="+79160000002", prefix="stop")
    twilio.fail_next(400, 21211)
    twilio.fail_next(400, 21610)
    report = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket())
    assert report.failed == 2
    assert [m.status for m in _messages(db)] == [MessageStatus.failed, MessageStatus.failed]
    assert db.get(SmsOptOut, "+79160000002") is not None
    assert db.get(SmsOptOut, "+79160000001") is None
    # Later messages to the unsubscribed phone are suppressed, never sent.
    _queue(sessions, 1, phone="+79160000002", prefix="again")
    report = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket())
    assert report.suppressed == 1
    assert report.sent == 0
    assert _messages(db)[-1].status is MessageStatus.suppressed
    assert twilio.messages == []


def test_a_message_fails_after_its_last_attempt(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    from notifications.senders import TransientSendError

    few = settings.model_copy(update={"sms_max_attempts": 2})
    _queue(sessions, 1)
    fake = FakeSender(fail=[TransientSendError("busy"), TransientSendError("busy")])
    now = utcnow()
    drain(sessions=sessions, sender=fake, settings=few, bucket=_bucket(), now=now)
    drain(sessions=sessions, sender=fake, settings=few, bucket=_bucket(), now=now + timedelta(hours=2))
    (message,) = _messages(db)
    assert message.status is MessageStatus.failed
    assert message.attempts == 2


def test_parallel_drains_never_send_a_message_twice(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    _queue(sessions, 40)
    lock = threading.Lock()
    seen: list[str] = []

    class Slow(FakeSender):
        def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
            time.sleep(0.01)
            with lock:
                seen.append(key)
            return super().send(to=to, body=body, key=key, status_callback=status_callback)

    sender = Slow()
    start = threading.Barrier(3)

    def run() -> None:
        start.wait()
        for _ in range(5):
            drain(sessions=sessions, sender=sender, settings=settings, bucket=TokenBucket(1000, burst=8))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(seen) == sorted(f"m:{i}" for i in range(40))  # each exactly once
    assert {m.status for m in _messages(db)} == {MessageStatus.sent}


def test_a_send_interrupted_by_a_crash_is_reconciled_not_repeated(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    sender = _sender(twilio)
    ids = _queue(sessions, 2)
    # Both were claimed by a drain that then died: one after Twilio accepted it, one before.
    long_ago = utcnow() - timedelta(seconds=settings.sms_stale_sending_s + 60)
    with sessions() as session:
        for message_id in ids:
            message = session.get(Message, message_id)
            assert message is not None
            message.status = MessageStatus.sending
            message.attempts = 1
            message.updated_at = long_ago
        session.commit()
    accepted = sender.send(to="+79161234567", body="Сообщение m0", key="m:0")
    report = drain(sessions=sessions, sender=sender, settings=settings, bucket=_bucket())
    assert report.reconciled == 1
    assert report.requeued == 1
    assert report.sent == 1
    first, second = _messages(db)
    assert (first.status, first.provider_sid) == (MessageStatus.sent, accepted.provider_sid)
    assert second.status is MessageStatus.sent
    bodies: Any = Counter(m["body"] for m in twilio.messages)
    assert bodies == {"Сообщение m0": 1, "Сообщение m1": 1}  # nobody got a message twice


def test_a_text_sent_twice_to_one_phone_is_reconciled_to_its_own_send_and_the_outbox_goes_on(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    sender = _sender(twilio)
    with sessions() as session:  # two helpers accepted parts of one need: the author gets one text twice
        ids = [
            messages_service.queue(
                session=session,
                phone="+79161234567",
                body="Заявка X: волонтёр взял(а) её",
                language="ru",
                idempotency_key=f"accepted:{i}",
            ).id
            for i in range(2)
        ]
        session.commit()
    first_sent = drain(sessions=sessions, sender=sender, settings=settings, bucket=_bucket())
    assert first_sent.sent == 2
    with sessions() as session:  # the second went out again later, and that drain died before storing its id
        second = session.get(Message, ids[1])
        assert second is not None
        second.status = MessageStatus.sending
        second.provider_sid = None
        second.updated_at = utcnow() - timedelta(seconds=settings.sms_stale_sending_s + 60)
        session.commit()
    _queue(sessions, 1, phone="+79165550000", prefix="other")
    report = drain(sessions=sessions, sender=sender, settings=settings, bucket=_bucket())
    assert report.reconciled == 1
    assert report.sent == 1  # the rest of the queue still goes out
    first, second, other = _messages(db)
    assert second.status is MessageStatus.sent
    assert second.provider_sid not in (None, first.provider_sid)  # its own send, not the first's
    assert other.status is MessageStatus.sent


def test_a_send_whose_answer_never_came_is_looked_up_not_sent_again(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    sender = TwilioSender(
        account_sid=ACCOUNT, auth_token="t0ken", from_="+15005550006", base_url=twilio.base_url, timeout_s=0.5
    )
    _queue(sessions, 1)
    twilio.answer_late(1.5)  # Twilio takes the message, but the answer comes after the client gave up
    report = drain(sessions=sessions, sender=sender, settings=settings, bucket=_bucket())
    assert (report.sent, report.retried) == (0, 0)
    (message,) = _messages(db)
    assert message.status is MessageStatus.sending  # maybe sent: to be looked up, not resent
    assert "may have been accepted" in (message.error or "")
    later = utcnow() + timedelta(seconds=settings.sms_stale_sending_s + 1)
    report = drain(sessions=sessions, sender=sender, settings=settings, bucket=_bucket(), now=later)
    assert report.reconciled == 1
    (message,) = _messages(db)
    assert message.status is MessageStatus.sent
    assert message.provider_sid == twilio.messages[0]["sid"]
    assert len(twilio.messages) == 1  # the recipient got it once


def test_a_provider_that_could_not_be_reached_is_tried_again(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    with socket.socket() as s:  # a port nobody listens on: the request never reaches anyone
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = TwilioSender(
        account_sid=ACCOUNT, auth_token="t0ken", from_="+15005550006", base_url=f"http://127.0.0.1:{port}"
    )
    _queue(sessions, 1)
    report = drain(sessions=sessions, sender=sender, settings=settings, bucket=_bucket())
    assert report.retried == 1
    (message,) = _messages(db)
    assert message.status is MessageStatus.queued  # safe to send again: it never left


_KILLED_DRAIN = """
import sys, time
from pathlib import Path
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.messages.outbox import drain
from notifications.ratelimit import TokenBucket
from notifications.senders import TwilioSender

url, base_url, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])


class DiesAfterThird(TwilioSender):
    sent = 0

    def send(self, **kwargs):
        result = super().send(**kwargs)  # Twilio has accepted it...
        DiesAfterThird.sent += 1
        if DiesAfterThird.sent == 3:
            marker.write_text(result.provider_sid)
            time.sleep(120)  # ...and the process dies before it records so
        return result


settings = Settings(database_url=url, public_url="http://testserver", _env_file=None)
sender = DiesAfterThird(account_sid="AC" + "5" * 32, auth_token="t", from_="+15005550006", base_url=base_url)
drain(sessions=make_sessionmaker(make_engine(settings.database_url)), sender=sender, settings=settings,
      bucket=TokenBucket(1000, burst=1000))
"""


def test_a_drain_killed_mid_send_sends_nothing_twice_and_everything_once_restarted(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio, tmp_path: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys

    _queue(sessions, 6)
    script = tmp_path / "killed_drain.py"
    script.write_text(_KILLED_DRAIN)
    marker = tmp_path / "accepted"
    proc = subprocess.Popen(
        [sys.executable, str(script), settings.database_url, twilio.base_url, str(marker)], env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the drain never got three messages through"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    statuses = Counter(m.status for m in _messages(db))
    assert statuses[MessageStatus.sent] == 2  # recorded before the crash
    assert statuses[MessageStatus.sending] == 4  # claimed, one of them already at Twilio
    # Restarted: once the claims are stale, the drain asks Twilio what it has, then sends the rest.
    quick = settings.model_copy(update={"sms_stale_sending_s": 0.5})
    time.sleep(1.0)
    report = drain(sessions=sessions, sender=_sender(twilio), settings=quick, bucket=_bucket())
    assert report.reconciled == 1
    assert report.requeued == 3
    assert report.sent == 3
    stored = _messages(db)
    assert {m.status for m in stored} == {MessageStatus.sent}
    bodies = Counter(m["body"] for m in twilio.messages)
    assert bodies == {f"Сообщение m{i}": 1 for i in range(6)}  # each exactly once
    assert next(m for m in stored if m.provider_sid == marker.read_text()).body == twilio.messages[2]["body"]


class _Crash(BaseException):
    """A process dying in the middle of a send (not an error any handler would take)."""


def test_a_long_message_interrupted_by_a_crash_is_reconciled_not_repeated(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    # Four segments of Cyrillic: the provider is given the text cut to sms_max_segments (3).
    long_body = "Задача 7: вода x2. Контакт: +79161234567, " + "ул. Длинная, дом у старой школы за мостом " * 5
    with sessions() as session:
        messages_service.queue(
            session=session, phone="+79160000001", body=long_body, language="ru", idempotency_key="k"
        )
        session.commit()
    provider = FakeSender()

    class DiesAfterSending(FakeSender):
        def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
            provider.send(to=to, body=body, key=key)
            raise _Crash  # after the provider took it, before the drain could record so

    with pytest.raises(_Crash):
        drain(sessions=sessions, sender=DiesAfterSending(), settings=settings, bucket=_bucket())
    (message,) = _messages(db)
    assert message.status is MessageStatus.sending
    message.updated_at = utcnow() - timedelta(seconds=settings.sms_stale_sending_s + 60)
    db.commit()
    report = drain(sessions=sessions, sender=provider, settings=settings, bucket=_bucket())
    assert report.reconciled == 1
    assert len(provider.sent) == 1  # found under the text really sent, so not sent again
    assert provider.sent[0]["body"] != long_body
    assert _messages(db)[0].status is MessageStatus.sent


def test_a_message_still_waiting_its_turn_in_a_live_drain_is_not_sent_twice(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    """One drain claims six slow sends; another drain's reconciliation runs while the first is still
    working through them. Each message goes out once, whoever sends it."""
    quick = settings.model_copy(update={"sms_stale_sending_s": 1.0})
    _queue(sessions, 6)
    lock = threading.Lock()
    provider = FakeSender()

    class Slow(FakeSender):
        def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
            time.sleep(0.4)
            with lock:
                return provider.send(to=to, body=body, key=key)

        def lookup(self, *, to: str, body: str, since: Any, known: Any = ()) -> str | None:
            with lock:
                return provider.lookup(to=to, body=body, since=since, known=known)

    first = threading.Thread(
        target=drain, kwargs={"sessions": sessions, "sender": Slow(), "settings": quick, "bucket": _bucket()}
    )
    first.start()
    time.sleep(1.5)
    drain(sessions=sessions, sender=Slow(), settings=quick, bucket=_bucket())
    first.join(timeout=60)
    assert Counter(m["key"] for m in provider.sent) == {f"m:{i}": 1 for i in range(6)}
    assert {m.status for m in _messages(db)} == {MessageStatus.sent}


def test_a_paced_pass_sends_at_the_configured_rate_not_one_burst(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    _queue(sessions, 60)
    fake = FakeSender()
    bucket = TokenBucket(20.0, burst=5)
    started = time.monotonic()
    report = drain(sessions=sessions, sender=fake, settings=settings, bucket=bucket, pace_s=1.0)
    elapsed = time.monotonic() - started
    # More than one burst went out during the pass, and never more than the bucket allowed.
    assert report.sent > 5
    assert report.sent <= 5 + 20.0 * elapsed + 1
    assert len(fake.sent) == report.sent


# The bucket every worker shares (``SharedTokenBucket``): a row in the database, one per bucket.


def _workers(settings: Settings, n: int) -> Iterator[list[sessionmaker[Session]]]:
    engines = [make_engine(settings.database_url) for _ in range(n)]
    try:
        yield [make_sessionmaker(e) for e in engines]
    finally:
        for e in engines:
            e.dispose()


@pytest.fixture
def two_workers(settings: Settings) -> Iterator[list[sessionmaker[Session]]]:
    yield from _workers(settings, 2)


def test_a_shared_bucket_is_one_bucket_for_every_worker(two_workers: list[sessionmaker[Session]]) -> None:
    now = [1_000.0]
    a, b = (SharedTokenBucket(s, "sms", 1.0, burst=2, clock=lambda: now[0]) for s in two_workers)
    assert a.take(5) == 2
    assert b.take(5) == 0  # a per-worker bucket would give 2 more
    assert a.wait_s() == pytest.approx(1.0)
    now[0] += 1.0
    assert b.wait_s() == 0.0
    assert b.take(5) == 1
    assert a.take(5) == 0
    b.give_back(1)
    assert a.take(5) == 1
    now[0] += 100.0  # refills to the burst, not beyond
    a.give_back(10)
    assert b.take(5) == 2
    now[0] -= 50.0  # a clock stepping back refills nothing
    assert a.take(1) == 0
    now[0] += 51.0
    assert a.take(5) == 1
    other = SharedTokenBucket(two_workers[0], "other", 1.0, burst=3, clock=lambda: now[0])
    assert other.take(5) == 3  # each name is its own bucket


@pytest.fixture
def six_workers(settings: Settings) -> Iterator[list[sessionmaker[Session]]]:
    yield from _workers(settings, 6)


def test_concurrent_takes_never_spend_a_token_twice(six_workers: list[sessionmaker[Session]]) -> None:
    buckets = [SharedTokenBucket(s, "sms", 1e-6, burst=25) for s in six_workers]  # refills ~nothing
    taken: list[int] = []
    start = threading.Barrier(len(buckets))

    def work(bucket: SharedTokenBucket) -> None:
        start.wait()
        taken.extend(bucket.take(1) for _ in range(10))

    threads = [threading.Thread(target=work, args=(b,)) for b in buckets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 25  # 60 tries by six workers at once: exactly the burst


def test_two_drains_share_the_providers_rate(
    settings: Settings, two_workers: list[sessionmaker[Session]], db: Session
) -> None:
    _queue(two_workers[0], 10)
    now = [5_000.0]
    fake = FakeSender()
    buckets = [SharedTokenBucket(s, "sms", 1.0, burst=3, clock=lambda: now[0]) for s in two_workers]
    sent = [
        drain(sessions=s, sender=fake, settings=settings, bucket=b).sent
        for s, b in zip(two_workers, buckets, strict=True)
    ]
    assert sent == [3, 0]
    now[0] += 2.0
    sent = [
        drain(sessions=s, sender=fake, settings=settings, bucket=b).sent
        for s, b in zip(two_workers, buckets, strict=True)
    ]
    assert sum(sent) == 2
    assert Counter(m.status for m in _messages(db)) == {MessageStatus.sent: 5, MessageStatus.queued: 5}
    assert len(fake.sent) == 5


def test_every_app_on_one_database_uses_the_same_sms_bucket(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    assert isinstance(first.state.sms_bucket, SharedTokenBucket)
    burst = int(first.state.sms_bucket.burst)
    assert first.state.sms_bucket.take(burst) == burst
    assert second.state.sms_bucket.take(1) == 0
    for app in (first, second):
        app.state.engine.dispose()


def test_a_reconciliation_does_not_requeue_a_message_its_drain_is_sending(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    """Drain A claimed M long ago (busy with earlier sends); drain B's reconciliation finds M stale
    and nothing at the provider, and A reaches M, stamps and sends it before B writes: B must not
    put M back in the queue (its own pass would then send it a second time)."""
    _queue(sessions, 1)
    provider = FakeSender()
    with sessions() as a:
        claimed = outbox._claim(a, 1, utcnow(), settings, DrainReport())
        assert len(claimed) == 1

        class Racing(FakeSender):
            def lookup(self, *, to: str, body: str, since: datetime, known: Collection[str] = ()) -> str | None:
                found = provider.lookup(to=to, body=body, since=since, known=known)  # nothing there yet
                outbox._send(a, claimed, provider, settings, utcnow(), DrainReport())  # A sends M now
                return found

            def send(self, **kw: Any) -> Sent:
                return provider.send(**kw)

        later = utcnow() + timedelta(seconds=settings.sms_stale_sending_s + 1)
        report = drain(sessions=sessions, sender=Racing(), settings=settings, bucket=_bucket(), now=later)
    assert [m["key"] for m in provider.sent] == ["m:0"]
    assert report.requeued == 0
    (m,) = _messages(db)
    assert m.status is MessageStatus.sent


def test_a_send_that_never_gets_an_answer_is_given_up_after_the_attempts(
    sessions: sessionmaker[Session], settings: Settings, db: Session
) -> None:
    """Each try times out (the outcome unknown) and the provider never has it: the reconciliation
    puts it back, and after ``sms_max_attempts`` it fails instead of looping for ever."""

    class Timeouts(FakeSender):
        def send(self, **kw: Any) -> Sent:
            raise UnknownOutcomeError("read timeout")

    _queue(sessions, 1)
    at = utcnow()
    for _ in range(3 * settings.sms_max_attempts):
        at += timedelta(hours=2)  # past any backoff
        drain(sessions=sessions, sender=Timeouts(), settings=settings, bucket=_bucket(), now=at)
        (m,) = _messages(db)
        if m.status is MessageStatus.failed:
            break
        m.updated_at -= timedelta(hours=2)  # the stamp is the wall clock's: age it
        db.commit()
    (m,) = _messages(db)
    assert m.status is MessageStatus.failed
    assert m.attempts == settings.sms_max_attempts
    assert "gave up" in (m.error or "")


@pytest.mark.parametrize(("status", "code"), [(400, 21611), (429, 14107)])
def test_a_full_queue_at_twilio_is_retried_not_failed(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio, status: int, code: int
) -> None:
    """21611: the 'From' number's queue is full, likely in a disaster's peak; 14107: the send rate."""
    _queue(sessions, 1)
    twilio.fail_next(status, code)
    now = utcnow()
    assert drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=now).retried == 1
    (message,) = _messages(db)
    assert (message.status, message.attempts) == (MessageStatus.queued, 1)
    later = now + timedelta(seconds=backoff_s(settings, 1) + 1)
    assert drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=later).sent == 1


@pytest.mark.parametrize(("status", "code"), [(401, 20003), (400, 21212), (403, 20003)])
def test_credentials_refused_hold_the_outbox_without_failing_a_message(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio, status: int, code: int
) -> None:
    """Our own set-up refused: no message is at fault. The batch waits, its attempts uncounted,
    and goes out once the set-up works again."""
    _queue(sessions, 3)
    twilio.fail_next(status, code, times=settings.sms_max_attempts + 1)
    now = utcnow()
    for step in range(settings.sms_max_attempts + 1):  # more passes than a message has attempts
        at = now + timedelta(hours=2 * step)
        report = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=at)
        assert (report.claimed, report.failed, report.sent) == (3, 0, 0)
        assert {(m.status, m.attempts) for m in _messages(db)} == {(MessageStatus.queued, 0)}
        assert twilio.messages == []
    later = now + timedelta(hours=2 * (settings.sms_max_attempts + 1))
    assert drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket(), now=later).sent == 3


def test_one_destination_our_number_cannot_reach_fails_alone(
    sessions: sessionmaker[Session], settings: Settings, db: Session, twilio: FakeTwilio
) -> None:
    """21606 is about that destination (a short code cannot text abroad), not our set-up: that
    message fails, the rest go out."""
    _queue(sessions, 1, phone="+442071838750", prefix="abroad")
    _queue(sessions, 3)
    twilio.fail_next(400, 21606)
    report = drain(sessions=sessions, sender=_sender(twilio), settings=settings, bucket=_bucket())
    assert (report.failed, report.sent) == (1, 3)
    assert [m.status for m in _messages(db)] == [MessageStatus.failed] + [MessageStatus.sent] * 3
