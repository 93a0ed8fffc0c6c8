"""delivery_reports: a delivery callback that comes before its message's provider id is stored

A send whose answer came late or never (a read timeout) has its provider id stored only when the
outbox reconciles it, minutes later; Twilio's callbacks for it came meanwhile and were dropped, so
an undelivered request stayed "sent". Such a callback is now kept here and applied when the id is.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_reports",
        sa.Column("provider_sid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_sid", name=op.f("pk_delivery_reports")),
    )
    op.create_index(op.f("ix_delivery_reports_created_at"), "delivery_reports", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_reports_created_at"), table_name="delivery_reports")
    op.drop_table("delivery_reports")
