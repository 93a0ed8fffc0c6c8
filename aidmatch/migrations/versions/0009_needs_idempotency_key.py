"""needs.idempotency_key: a client's retry of POST /api/needs makes no second need

A client that lost the answer to a post (a dropped connection, a timeout) could only post again and
make a second need. With an ``Idempotency-Key`` header the need keeps the key's SHA-256 (unique) and
the body's, and the same key answers with that need.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("needs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("idempotency_body", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_needs_idempotency_key"), ["idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("needs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_needs_idempotency_key"))
        batch_op.drop_column("idempotency_body")
        batch_op.drop_column("idempotency_key")
