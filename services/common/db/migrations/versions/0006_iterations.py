"""an attempt's iterations (agent runs while its checks failed) and the events it recorded

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: one iteration, whose record is the attempt's own columns.
    op.add_column("agent_results", sa.Column("iterations", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("agent_results", sa.Column("events", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("agent_results", "events")
    op.drop_column("agent_results", "iterations")
