"""matches.helper_id and a unique (need_id, helper_id) index

A helper is asked about a need once, whatever the answer. Until now only the code kept that rule,
by reading the pairs asked before; two workers (one's batch run, the other's escalation wave, or a
decline's next helpers) could read before either wrote and both ask. The database now keeps it:
every match carries its offer's helper and inserts skip a pair that exists (``ON CONFLICT DO
NOTHING``). Rows of a pair asked twice before this migration keep their history: the first of
each pair gets the helper, the later ones NULL, which the unique index allows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("helper_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_matches_helper_id_helpers"), "helpers", ["helper_id"], ["id"], ondelete="CASCADE"
        )
    op.execute(
        "UPDATE matches SET helper_id = (SELECT offers.helper_id FROM offers WHERE offers.id = matches.offer_id)"
    )
    # The later rows of a pair asked more than once keep no helper (their offer still says who).
    op.execute(
        "UPDATE matches SET helper_id = NULL WHERE helper_id IS NOT NULL AND id NOT IN "
        "(SELECT MIN(id) FROM matches WHERE helper_id IS NOT NULL GROUP BY need_id, helper_id)"
    )
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.create_index("uq_matches_need_id_helper_id", ["need_id", "helper_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.drop_index("uq_matches_need_id_helper_id")
        batch_op.drop_constraint(batch_op.f("fk_matches_helper_id_helpers"), type_="foreignkey")
        batch_op.drop_column("helper_id")
