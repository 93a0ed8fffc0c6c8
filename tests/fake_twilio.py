"""A local HTTP server that answers like Twilio's Messages API, for the real ``twilio`` client.

It records every request (method, path, form, basic-auth user), answers ``POST
/2010-04-01/Accounts/{sid}/Messages.json`` with a realistic 201 message resource, lists messages
on ``GET`` (``To`` and ``DateSent>`` filters), and can be told to fail the next requests with a
status and a Twilio error code (429, 500, 400/21211, 400/21610…).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class FakeTwilio:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, int]] = field(default_factory=list)  # (HTTP status, Twilio code), in order
    lock: threading.Lock = field(default_factory=threading.Lock)
    slow_s: list[float] = field(default_factory=list)  # accept the next messages, but answer this late
    # As Twilio under load: accepted messages wait in its queue, with no send date yet.
    hold_in_queue: bool = False
    # As Twilio's Smart Encoding: characters with a GSM-7 look-alike are replaced in what it stores.
    smart_encoding: bool = False

    def fail_next(self, status: int, code: int, times: int = 1) -> None:
        with self.lock:
            self.failures.extend([(status, code)] * times)

    def answer_late(self, seconds: float, times: int = 1) -> None:
        """The next messages are accepted (and so delivered) but the answer comes ``seconds`` late."""
        with self.lock:
            self.slow_s.extend([seconds] * times)


def _resource(account: str, sid: str, form: dict[str, str], now: datetime) -> dict[str, Any]:
    body = form.get("Body", "")
    ucs2 = any(ord(c) > 127 for c in body)
    per = 70 if ucs2 else 160
    return {
        "account_sid": account,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": format_datetime(now),
        "date_sent": format_datetime(now),
        "date_updated": format_datetime(now),
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": str(max(1, -(-len(body) // per))),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"},
        "to": form.get("To"),
        "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
    }


@contextmanager
def fake_twilio() -> Iterator[FakeTwilio]:
    state = FakeTwilio()
    counter = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (``answer_late``), as it does at Twilio

        def _auth_user(self) -> str | None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            return base64.b64decode(header[6:]).decode().split(":", 1)[0]

        def _record(self, form: dict[str, str]) -> str:
            url = urlparse(self.path)
            with state.lock:
                state.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": url.query,
                        "form": form,
                        "user": self._auth_user(),
                    }
                )
            return url.path

        def _failure(self) -> tuple[int, int] | None:
            with state.lock:
                return state.failures.pop(0) if state.failures else None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            path = self._record(form)
            parts = path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "2010-04-01" or parts[3] != "Messages.json":
                self._reply(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
                return
            failure = self._failure()
            if failure is not None:
                status, code = failure
                self._reply(
                    status,
                    {
                        "code": code,
                        "message": f"fake failure {code}",
                        "more_info": f"https://www.twilio.com/docs/errors/{code}",
                        "status": status,
                    },
                )
                return
            if not form.get("To") or not form.get("Body") or not (form.get("From") or form.get("MessagingServiceSid")):
                self._reply(400, {"code": 21604, "message": "A 'To' phone number is required.", "status": 400})
                return
            sid = f"SM{next(counter):032x}"
            if state.smart_encoding:
                form = {**form, "Body": form["Body"].translate(str.maketrans("«»—", '""-'))}
            resource = _resource(parts[2], sid, form, datetime.now(UTC))
            if state.hold_in_queue:
                resource["date_sent"] = None
            with state.lock:
                state.messages.append(resource)
                late = state.slow_s.pop(0) if state.slow_s else 0.0
            if late:
                time.sleep(late)
            self._reply(201, resource)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            self._record({})
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            with state.lock:
                found = [m for m in state.messages if "To" not in query or m["to"] == query["To"]]
            if "DateSent>" in query:  # by the day it was sent: a message not sent yet has no such day
                day = query["DateSent>"][:10]
                found = [
                    m
                    for m in found
                    if m["date_sent"] and parsedate_to_datetime(m["date_sent"]).date().isoformat() >= day
                ]
            found = found[::-1]  # the most recent first, as Twilio lists them
            self._reply(
                200,
                {
                    "messages": found,
                    "end": max(0, len(found) - 1),
                    "first_page_uri": url.path,
                    "next_page_uri": None,
                    "page": 0,
                    "page_size": 50,
                    "previous_page_uri": None,
                    "start": 0,
                    "uri": url.path,
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
