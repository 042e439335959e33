"""status columns hold only the statuses COO knows

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The values of services/common/status.py (and the approvals' own four) as they are at this
# revision: a later status needs a migration of its own.
STATUSES: dict[str, tuple[str, ...]] = {
    "missions": ("queued", "running", "paused", "succeeded", "failed", "cancelled"),
    "steps": (
        "pending",
        "ready",
        "awaiting_approval",
        "dispatched",
        "running",
        "retry_wait",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
    ),
    "sandbox_runs": ("running", "succeeded", "failed", "timeout", "error", "cancelled"),
    "approvals": ("pending", "approved", "rejected", "expired"),
}


def upgrade() -> None:
    for table, values in STATUSES.items():
        listed = ", ".join(f"'{value}'" for value in values)
        op.create_check_constraint(op.f(f"ck_{table}_status"), table, f"status IN ({listed})")


def downgrade() -> None:
    for table in reversed(STATUSES):
        op.drop_constraint(op.f(f"ck_{table}_status"), table, type_="check")
