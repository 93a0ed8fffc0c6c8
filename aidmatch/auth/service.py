"""Bearer tokens: created by the CLI, checked on every request that carries one."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.auth.models import ApiToken
from aidmatch.database import utcnow
from aidmatch.enums import Role

TOKEN_PREFIX = "am_"


def hash_secret(value: str) -> str:
    """SHA-256 hex of a high-entropy secret (tokens, private links): enough, as they are random."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: Role

    @property
    def is_coordinator(self) -> bool:
        return self.role is Role.coordinator


def create(*, session: Session, name: str, role: Role) -> tuple[ApiToken, str]:
    """A new token row and the plaintext token (shown once, never stored)."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, role=role, token_hash=hash_secret(plaintext))
    session.add(token)
    session.flush()
    audit.record(session, "created", "token", token.id, name=name, role=role.value)
    return token, plaintext


def authenticate(*, session: Session, plaintext: str) -> Principal | None:
    """The principal for a live token, or None for unknown and revoked ones."""
    token = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_secret(plaintext), ApiToken.revoked_at.is_(None))
    )
    if token is None:
        return None
    return Principal(token_id=token.id, name=token.name, role=token.role)


def revoke(*, session: Session, token_id: int) -> bool:
    token = session.get(ApiToken, token_id)
    if token is None or token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    session.flush()
    audit.record(session, "revoked", "token", token_id)
    return True


def list_tokens(*, session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
