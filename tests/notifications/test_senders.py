"""Senders (the real twilio client against a local fake Twilio), segments and the token bucket."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.ratelimit import TokenBucket
from notifications.segments import fit, is_gsm7, segments
from notifications.senders import (
    ConsoleSender,
    FakeSender,
    PermanentSendError,
    TransientSendError,
    TwilioSender,
    same_text,
)
from tests.fake_twilio import fake_twilio

ACCOUNT = "AC" + "1" * 32


def _sender(base_url: str) -> TwilioSender:
    return TwilioSender(account_sid=ACCOUNT, auth_token="secret-token", base_url=base_url, from_="+15005550006")


def test_twilio_sender_posts_a_message_like_the_real_api() -> None:
    with fake_twilio() as twilio:
        sent = _sender(twilio.base_url).send(
            to="+79161234567",
            body="Нужна помощь: вода",
            key="match:1:ask",
            status_callback="https://x.example/sms/status",
        )
        (request,) = twilio.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert request["user"] == ACCOUNT
    assert request["form"] == {
        "To": "+79161234567",
        "From": "+15005550006",
        "Body": "Нужна помощь: вода",
        "StatusCallback": "https://x.example/sms/status",
    }
    assert sent.provider_sid.startswith("SM")
    assert sent.status == "queued"


def test_a_messaging_service_replaces_the_from_number() -> None:
    with fake_twilio() as twilio:
        TwilioSender(
            account_sid=ACCOUNT, auth_token="t", messaging_service_sid="MG" + "2" * 32, base_url=twilio.base_url
        ).send(to="+79161234567", body="hi", key="k")
        form = twilio.requests[0]["form"]
    assert form["MessagingServiceSid"] == "MG" + "2" * 32
    assert "From" not in form


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (429, 20429, TransientSendError),
        (500, 20500, TransientSendError),
        (503, 20503, TransientSendError),
        (400, 21211, PermanentSendError),
        (400, 21610, PermanentSendError),
        (400, 21614, PermanentSendError),
    ],
)
def test_twilio_errors_are_transient_or_permanent(status: int, code: int, error: type[Exception]) -> None:
    with fake_twilio() as twilio:
        twilio.fail_next(status, code)
        sender = _sender(twilio.base_url)
        with pytest.raises(error) as raised:
            sender.send(to="+79161234567", body="x", key="k")
        assert getattr(raised.value, "code", None) == code
        assert sender.send(to="+79161234567", body="x", key="k").provider_sid  # the next one goes through


def test_an_unreachable_twilio_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(TransientSendError):
        _sender(f"http://127.0.0.1:{port}").send(to="+79161234567", body="x", key="k")


def test_lookup_finds_a_message_already_accepted() -> None:
    with fake_twilio() as twilio:
        sender = _sender(twilio.base_url)
        sent = sender.send(to="+79161234567", body="Вода x2", key="k")
        since = datetime.now(UTC) - timedelta(minutes=5)
        assert sender.lookup(to="+79161234567", body="Вода x2", since=since) == sent.provider_sid
        assert sender.lookup(to="+79161234567", body="другой текст", since=since) is None
        assert sender.lookup(to="+79990000000", body="Вода x2", since=since) is None


def test_lookup_finds_a_message_still_in_twilios_queue_and_one_smart_encoding_changed() -> None:
    """A message accepted but not sent yet has no send date; Smart Encoding stores «» as ". Either
    missed would have a crashed drain's message sent a second time."""
    with fake_twilio() as twilio:
        twilio.hold_in_queue = True
        twilio.smart_encoding = True
        sender = _sender(twilio.base_url)
        since = datetime.now(UTC) - timedelta(minutes=1)
        sent = sender.send(to="+79161234567", body="Заявка «ABC123» — вода", key="k")
        assert sender.lookup(to="+79161234567", body="Заявка «ABC123» — вода", since=since) == sent.provider_sid
        assert (
            sender.lookup(to="+79161234567", body="Заявка «ABC123» — вода", since=since, known={sent.provider_sid})
            is None
        )
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert sender.lookup(to="+79161234567", body="Заявка «ABC123» — вода", since=later) is None


def test_same_text_folds_what_the_provider_changes() -> None:
    assert same_text('Заявка "ABC" - вода...', "Заявка «ABC» — вода…")
    assert same_text("Sent from your Twilio trial account - Help needed", "Help needed")
    assert not same_text("Help needed now", "Help needed")
    assert not same_text("", "x")


def test_console_and_fake_senders() -> None:
    assert ConsoleSender().send(to="+7916", body="x", key="k").status == "sent"
    fake = FakeSender(fail=[TransientSendError("busy")])
    with pytest.raises(TransientSendError):
        fake.send(to="+7916", body="x", key="k")
    sid = fake.send(to="+7916", body="x", key="k").provider_sid
    assert fake.lookup(to="+7916", body="x", since=datetime.now(UTC)) == sid


def test_segments_count_gsm7_and_ucs2() -> None:
    assert segments("") == 0
    assert is_gsm7("Help needed: water x2")
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2
    assert segments("a" * 306) == 2
    assert segments("{" * 80) == 1  # extension characters take two septets
    assert segments("{" * 81) == 2
    assert not is_gsm7("Вода")
    assert segments("я" * 70) == 1
    assert segments("я" * 71) == 2
    assert segments("я" * 134) == 2
    assert segments("я" * 135) == 3


def test_fit_cuts_at_a_word_within_the_segments() -> None:
    text = " ".join(["слово"] * 60)  # 359 characters of Cyrillic: 6 segments
    cut = fit(text, 2)
    assert segments(cut) <= 2
    assert cut.endswith("…")
    assert text.startswith(cut[:-1])
    assert fit("коротко", 1) == "коротко"
    assert segments(fit("я" * 500, 1)) == 1


def test_a_cut_gsm7_text_stays_gsm7_and_keeps_its_three_segments() -> None:
    text = " ".join(["word"] * 120)  # 599 characters of GSM-7: 4 segments
    cut = fit(text, 3)
    assert is_gsm7(cut)
    assert cut.endswith("...")
    assert segments(cut) == 3
    assert len(cut) > 400  # three GSM-7 segments hold 459 characters, not the 201 of UCS-2


def test_token_bucket_limits_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, burst=4, clock=lambda: now[0])
    assert bucket.take(10) == 4  # the burst
    assert bucket.take(1) == 0
    now[0] += 1.0
    assert bucket.take(10) == 2  # two a second
    bucket.give_back(1)
    assert bucket.take(10) == 1
    assert bucket.wait_s() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must be > 0"):
        TokenBucket(0)


def _segments_by_prefixes(text: str) -> int:
    """Oracle: cut the longest prefix that encodes within one segment, again and again."""
    gsm = is_gsm7(text)

    def units(part: str) -> int:
        if gsm:
            return len(part) + sum(c in "^{}\\[~]|€\f" for c in part)
        return len(part.encode("utf-16-le")) // 2

    if not text:
        return 0
    if units(text) <= (160 if gsm else 70):
        return 1
    count = 0
    while text:
        n = len(text)
        while units(text[:n]) > (153 if gsm else 67):
            n -= 1
        text, count = text[n:], count + 1
    return count


def test_a_two_unit_character_never_straddles_a_segment_boundary() -> None:
    # 66 + 2 + 133 = 201 UTF-16 units would fit 3 × 67, but the emoji cannot be split: 4 segments.
    assert segments("я" * 66 + "💧" + "я" * 133) == 4
    # 152 + 2 + 152 = 306 septets would fit 2 × 153, but the escape and "€" go together: 3.
    assert segments("a" * 152 + "€" + "a" * 152) == 3
    assert segments("💧" * 35) == 1  # 70 units in one segment
    assert segments("💧" * 36) == 2  # 72 units: 33 emoji (66 units) in the first, 3 in the second


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aя€{💧 Ж\n.")), max_size=400))
def test_segments_agree_with_cutting_prefixes(text: str) -> None:
    assert segments(text) == _segments_by_prefixes(text)
    assert segments(fit(text, 2)) <= 2
