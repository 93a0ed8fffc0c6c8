"""Bearer tokens for coordinators and volunteers. Only a hash of each token is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aidmatch.columns import enum_type
from aidmatch.database import Base, UTCDateTime, utcnow
from aidmatch.enums import Role


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(enum_type(Role, "role"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Browser sessions signed in before this were logged out (a logout ends all of the token's).
    sessions_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
