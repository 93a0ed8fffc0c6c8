"""Abuse and load limits: public posting per client, SMS per phone, request size.

Per-key token buckets live in each worker's memory (N workers allow N times the rate; the
limits are against floods, not exact quotas). The oldest keys are forgotten past ``max_keys``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aidmatch.config import Settings
from aidmatch.errors import PayloadTooLargeError, TooManyRequestsError, problem
from notifications.ratelimit import TokenBucket


class KeyedLimiter:
    """A token bucket per key (client address, phone number)."""

    def __init__(
        self, rate_per_s: float, burst: float, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.max_keys, self._clock = rate_per_s, burst, max_keys, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, what: str) -> None:
        """Take one token for ``key`` or raise 429 saying when to come back."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.burst, clock=self._clock)
                self._buckets[key] = bucket
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
        if bucket.take(1) == 0:
            wait = bucket.wait_s()
            raise TooManyRequestsError(f"too many {what}; try again in {max(1, round(wait))} s", retry_after_s=wait)


def client_key(request: Request, settings: Settings) -> str:
    """Who is calling: the peer address or, behind trusted proxies, the address the outermost of
    them saw: X-Forwarded-For's entry ``proxy_hops`` from the right. Each proxy appends the address
    it was called from, so the entries to the left of it are the client's to write, and a client
    who sends its own X-Forwarded-For must not get a new bucket for each made-up address."""
    if settings.trust_forwarded_for:
        hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",") if h.strip()]
        if hops:
            return hops[-min(settings.proxy_hops, len(hops))]
    return request.client.host if request.client else "unknown"


async def limit_public_posts(request: Request) -> None:
    """Dependency of the public POST routes: at most PUBLIC_POST_PER_MIN per client (burst PUBLIC_POST_BURST).

    ``async``: it only takes a token from memory, so it runs on the event loop, not in the pool.
    """
    settings: Settings = request.app.state.settings
    request.app.state.post_limiter.check(client_key(request, settings), "posts from this address")


PublicPostLimit = Annotated[None, Depends(limit_public_posts)]


def make_limiters(settings: Settings) -> tuple[KeyedLimiter, KeyedLimiter]:
    """(public posts per client, inbound SMS per phone)."""
    return (
        KeyedLimiter(settings.public_post_per_min / 60.0, settings.public_post_burst),
        KeyedLimiter(settings.sms_per_phone_per_min / 60.0, settings.sms_per_phone_burst),
    )


_DRAIN_BYTES = 8 * 1024 * 1024


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        over = False
        replaced = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise PayloadTooLargeError(f"the request body is over {self.max_bytes} bytes")
            return message

        async def answered(message: Message) -> None:
            # A route's body parser may turn our error into its own (FastAPI answers 400 "error
            # parsing the body" for JSON): a body found too long while streaming is always a 413.
            nonlocal replaced
            if over:
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await self._too_large()(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counted, answered)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Most clients write the whole body before they read the answer: read and drop it (up to a
        # bound) so they get the 413 rather than a broken pipe; a body past the bound is cut off.
        dropped, bound = 0, max(_DRAIN_BYTES, 4 * self.max_bytes)
        while dropped <= bound:
            message = await receive()
            if message["type"] != "http.request":
                break
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self._too_large()(scope, receive, send)

    def _too_large(self) -> JSONResponse:
        return problem(
            413,
            PayloadTooLargeError.type_,
            PayloadTooLargeError.title,
            f"the request body is over {self.max_bytes} bytes",
        )
