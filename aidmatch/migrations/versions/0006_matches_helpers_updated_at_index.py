"""indexes on matches.updated_at and helpers.updated_at

Each worker keeps the open tasks and the helpers' caps in memory for the unmet statistics and asks
before every computation for the rows stamped after the newest change it has seen; these indexes
answer that with a range scan instead of a scan of every match and every helper.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_matches_updated_at"), ["updated_at"], unique=False)
    with op.batch_alter_table("helpers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_helpers_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("helpers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_helpers_updated_at"))
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_matches_updated_at"))
