"""Who actually sends an SMS: the console (default), Twilio, or a fake for tests.

A sender either returns the provider's message id or raises ``TransientSendError`` (try again
later: rate limits, a full queue, 5xx, network; ``ConfigurationSendError``: our credentials or
sender number are refused) or ``PermanentSendError`` (never retry: invalid number, unsubscribed
recipient). ``lookup`` finds a message the provider already accepted, so that a
send interrupted by a crash can be reconciled instead of repeated.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from notifications.errors import NotificationsError

log = logging.getLogger("aidmatch.sms")

# Twilio error codes that will not change by retrying (https://www.twilio.com/docs/api/errors).
PERMANENT_TWILIO_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21606,  # the 'From' number cannot reach this destination (a short code abroad, say)
        21408,  # region not enabled
        21610,  # recipient unsubscribed (replied STOP)
        21612,  # unreachable 'To'
        21614,  # 'To' is not a mobile number
        21617,  # body too long
        30003,  # unreachable destination handset (at send time)
        30004,  # message blocked
        30005,  # unknown destination handset
        30006,  # landline or unreachable carrier
    }
)


# Busy for now: the 'From' number's queue is full (likely in a disaster's peak), or the account's
# send rate is exceeded. Retried with backoff, like a 429.
TRANSIENT_TWILIO_CODES = frozenset({14107, 20429, 20500, 20503, 21611})
# Our own set-up is wrong (credentials, the 'From' number or messaging service): no message can go
# until someone fixes it, and none of them is at fault. 401/403 mean the same.
CONFIGURATION_TWILIO_CODES = frozenset(
    {
        20003,  # authentication failed
        21212,  # invalid 'From' number
        21703,  # the messaging service has no phone numbers
    }
)


class SendError(NotificationsError):
    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientSendError(SendError):
    """Try again later."""


class PermanentSendError(SendError):
    """Never retry this message."""


class ConfigurationSendError(TransientSendError):
    """The provider refuses every message of ours as set up (credentials, sender number): the
    message waits, with its attempt not counted, until the set-up is fixed."""


class UnknownOutcomeError(TransientSendError):
    """The request went out but no answer came back (a read timeout, a dropped connection): the
    provider may have accepted the message, so it must be looked up (``lookup``) before any resend."""


@dataclass(frozen=True, slots=True)
class Sent:
    provider_sid: str
    status: str  # the provider's status at hand-over: queued, accepted, sent…


class Sender(Protocol):
    name: str

    def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent: ...

    def lookup(self, *, to: str, body: str, since: datetime, known: Collection[str] = ()) -> str | None:
        """The id of a message with this text sent to ``to`` since ``since`` that is not among ``known``
        (ids already stored for other messages: one text may go to one phone twice); None if none."""
        ...


class ConsoleSender:
    """Logs each message instead of sending it (the default: nothing leaves the machine)."""

    name = "console"

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
        with self._lock:
            n = next(self._counter)
        log.info("SMS to %s [%s]: %s", to, key, body)
        return Sent(provider_sid=f"console-{key}-{n}", status="sent")

    def lookup(self, *, to: str, body: str, since: datetime, known: Collection[str] = ()) -> str | None:
        return None  # nothing left the machine, so resending cannot reach anyone twice


@dataclass
class FakeSender:
    """Records messages; ``fail`` holds errors to raise on the next sends, in order."""

    name: str = "fake"
    sent: list[dict[str, Any]] = field(default_factory=list)
    fail: list[SendError] = field(default_factory=list)

    def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
        if self.fail:
            raise self.fail.pop(0)
        sid = f"SMfake{len(self.sent) + 1:030d}"
        self.sent.append({"to": to, "body": body, "key": key, "sid": sid, "status_callback": status_callback})
        return Sent(provider_sid=sid, status="queued")

    def lookup(self, *, to: str, body: str, since: datetime, known: Collection[str] = ()) -> str | None:
        return next(
            (m["sid"] for m in self.sent if m["to"] == to and m["body"] == body and m["sid"] not in known), None
        )


class TwilioSender:
    """Twilio's Messages API through the official ``twilio`` client.

    ``base_url`` replaces https://api.twilio.com (tests point it at a local server that answers
    like Twilio). Sends from a Messaging Service when one is configured, else from ``from_``.
    """

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_: str = "",
        messaging_service_sid: str = "",
        base_url: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        if not (from_ or messaging_service_sid):
            raise ValueError("TwilioSender needs a From number or a Messaging Service SID")
        self._client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_s))
        if base_url:
            self._client.api.base_url = base_url.rstrip("/")
        self._from = from_
        self._service = messaging_service_sid

    def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
        from twilio.base.exceptions import TwilioException, TwilioRestException

        kwargs: dict[str, Any] = {"to": to, "body": body}
        if self._service:
            kwargs["messaging_service_sid"] = self._service
        else:
            kwargs["from_"] = self._from
        if status_callback:
            kwargs["status_callback"] = status_callback
        try:
            message = self._client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _classify(exc) from exc
        except (TwilioException, OSError) as exc:  # connection errors, timeouts
            if _never_reached(exc):
                raise TransientSendError(f"Twilio unreachable: {exc}") from exc
            raise UnknownOutcomeError(f"no answer from Twilio (the message may have been accepted): {exc}") from exc
        return Sent(provider_sid=str(message.sid), status=str(message.status))

    def lookup(self, *, to: str, body: str, since: datetime, known: Collection[str] = ()) -> str | None:
        from twilio.base.exceptions import TwilioException

        try:
            # The most recent messages to the phone, not a ``DateSent`` filter: a message Twilio
            # accepted and still holds in its queue has no send date yet, and would be missed.
            for message in self._client.messages.list(to=to, limit=50):
                created = message.date_created
                if created is not None and created < since:
                    continue
                if same_text(message.body or "", body) and str(message.sid) not in known:
                    return str(message.sid)
        except (TwilioException, OSError) as exc:
            raise TransientSendError(f"cannot look up earlier messages at Twilio: {exc}") from exc
        return None


# What Twilio's Smart Encoding may have put in place of characters of ours (quotes, dashes,
# ellipsis, spaces), folded alike on both sides before two texts are compared.
_SMART = str.maketrans(
    {
        "«": '"',
        "»": '"',
        "“": '"',
        "”": '"',
        "„": '"',
        "‘": "'",
        "’": "'",
        "–": "-",
        "—": "-",
        "\u00a0": " ",
        "\u202f": " ",
    }
)


def same_text(provider_body: str, ours: str) -> bool:
    """Whether a message the provider holds is ``ours``: equal once Smart Encoding's replacements
    are folded away, allowing for a prefix the provider adds (a trial account's notice)."""
    theirs = provider_body.translate(_SMART).replace("…", "...").strip()
    mine = ours.translate(_SMART).replace("…", "...").strip()
    return theirs == mine or (bool(mine) and theirs.endswith(" " + mine))


def _classify(exc: Any) -> SendError:
    code = getattr(exc, "code", None)
    status = int(getattr(exc, "status", 0) or 0)
    message = f"Twilio error {code or status}: {getattr(exc, 'msg', exc)}"
    if code in CONFIGURATION_TWILIO_CODES or status in (401, 403):
        return ConfigurationSendError(message, code=code)
    if code in PERMANENT_TWILIO_CODES:
        return PermanentSendError(message, code=code)
    if status == 429 or status >= 500 or code in TRANSIENT_TWILIO_CODES:
        return TransientSendError(message, code=code)
    if 400 <= status < 500:
        return PermanentSendError(message, code=code)
    return TransientSendError(message, code=code)


def _never_reached(exc: BaseException) -> bool:
    """Whether a failed request surely never reached the provider (no connection was made), so a
    resend cannot deliver the message twice. A read timeout or a dropped connection is not that."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout | ConnectionRefusedError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else None
        reason = getattr(inner, "reason", inner)  # urllib3's MaxRetryError carries why
        return type(reason).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
    return False
