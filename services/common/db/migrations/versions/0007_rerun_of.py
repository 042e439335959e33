"""missions.rerun_of: the mission a rerun repeats

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for a mission that is no rerun; SET NULL keeps a rerun when its original is deleted.
    op.add_column("missions", sa.Column("rerun_of", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_missions_rerun_of_missions"), "missions", "missions", ["rerun_of"], ["id"], ondelete="SET NULL"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_missions_rerun_of_missions"), "missions", type_="foreignkey")
    op.drop_column("missions", "rerun_of")
