"""emergency mode, escalation and reconfirmation state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_service_state")),
    )
    with op.batch_alter_table("needs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reconfirm_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("escalation_wave", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("escalation_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_needs_escalation_next_at", ["escalation_next_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("needs", schema=None) as batch_op:
        batch_op.drop_index("ix_needs_escalation_next_at")
        batch_op.drop_column("escalation_next_at")
        batch_op.drop_column("escalation_wave")
        batch_op.drop_column("reconfirm_requested_at")

    op.drop_table("service_state")
