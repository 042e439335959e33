"""agents.mcp_servers: the remote MCP servers whose tools an agent is offered

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Agents defined before MCP servers existed use none.
    op.add_column(
        "agents",
        sa.Column("mcp_servers", postgresql.JSONB(astext_type=sa.Text()), nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    op.drop_column("agents", "mcp_servers")
