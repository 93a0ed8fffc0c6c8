"""A token bucket every worker shares, kept in the database (table ``rate_buckets``).

The outbox's rate (``SMS_RATE_PER_S``) is what the provider allows the sending number or
service, not what each worker may send: with a bucket per worker, N workers sent N times the
rate. Here each ``take`` is one short transaction on the bucket's row: it refills the tokens for
the time since the last take (at ``rate`` a second, up to ``burst``), takes what it can and
writes the rest back. The first statement of the transaction is an UPDATE of that row, so
PostgreSQL's row lock (SQLite's write lock) serialises concurrent takes: two workers never spend
the same token.

Time is the callers' wall clock (``time.time``), which workers on one host share and hosts keep
within milliseconds by NTP; a clock that steps back refills nothing until it catches up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import case, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.messages.models import RateBucket
from notifications.ratelimit import checked

_T = RateBucket.__table__.c


class SharedTokenBucket:
    """The ``notifications.ratelimit.Bucket`` interface over one row of ``rate_buckets``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        name: str,
        rate_per_s: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate, self.burst = checked(rate_per_s, burst)
        self.name = name
        self._sessions, self._clock = sessions, clock
        self._created = False

    def _refill(self, session: Session) -> float:
        """Refill the row to now (creating it full the first time); the tokens it holds, row locked."""
        now = self._clock()
        if not self._created:
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            session.execute(
                insert(RateBucket)
                .values(name=self.name, tokens=self.burst, at=now)
                .on_conflict_do_nothing(index_elements=[RateBucket.name])
            )
            self._created = True
        elapsed = case((_T.at < now, literal(now) - _T.at), else_=0.0)
        filled = _T.tokens + elapsed * self.rate
        tokens = session.execute(
            update(RateBucket)
            .where(_T.name == self.name)
            .values(
                tokens=case((filled > self.burst, self.burst), else_=filled), at=case((_T.at < now, now), else_=_T.at)
            )
            .returning(_T.tokens)
        ).scalar_one_or_none()
        if tokens is None:  # the row was deleted under us (a test reset): start full again
            self._created = False
            return self._refill(session)
        return float(tokens)

    def take(self, n: int = 1) -> int:
        """Take up to ``n`` whole tokens now; returns how many were taken."""
        with self._sessions.begin() as session:
            tokens = self._refill(session)
            got = max(0, min(n, int(tokens)))
            if got:
                session.execute(update(RateBucket).where(_T.name == self.name).values(tokens=_T.tokens - got))
            return got

    def give_back(self, n: int) -> None:
        """Return tokens taken but not used (never above the burst)."""
        if n <= 0:
            return
        with self._sessions.begin() as session:
            back = _T.tokens + n
            session.execute(
                update(RateBucket)
                .where(_T.name == self.name)
                .values(tokens=case((back > self.burst, self.burst), else_=back))
            )

    def wait_s(self) -> float:
        """Seconds until the next whole token (as of now; another worker may take it first)."""
        with self._sessions() as session:
            row = session.execute(select(_T.tokens, _T.at).where(_T.name == self.name)).first()
        if row is None:
            return 0.0
        tokens = min(self.burst, float(row.tokens) + max(0.0, self._clock() - float(row.at)) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate)
