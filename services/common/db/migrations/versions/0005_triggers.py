"""triggers: schedules and their fire times, event triggers and their deliveries, missions.trigger

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The values of services/common/status.py as they are at this revision.
OVERLAP = ("skip", "buffer_one", "allow_all", "cancel_other")
FIRE_OUTCOMES = ("started", "skipped", "buffered", "missed", "failed")
FIRE_KINDS = ("scheduled", "backfill", "manual")
DELIVERY_OUTCOMES = ("started", "duplicate", "ignored", "bad_signature", "failed")


def _one_of(column: str, values: Sequence[str]) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


def _timestamp(name: str, *, nullable: bool = False, server_default: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text("now()") if server_default else None,
    )


def upgrade() -> None:
    # Missions made before triggers existed were all started through the API.
    op.add_column(
        "missions",
        sa.Column("trigger", postgresql.JSONB(astext_type=sa.Text()), nullable=False, server_default='{"type": "api"}'),
    )
    op.create_index(
        "ix_missions_trigger_created_at",
        "missions",
        [sa.text("(trigger ->> 'type')"), sa.text("(trigger ->> 'name')"), "created_at"],
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("catchup_window_s", sa.Float(), nullable=False),
        sa.Column("jitter_s", sa.Float(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("budget_usd", sa.Numeric(18, 8), nullable=True),
        sa.Column("budget_tokens", sa.BigInteger(), nullable=True),
        _timestamp("next_fire_at"),
        _timestamp("next_due_at"),
        _timestamp("buffered_fire_at", nullable=True),
        sa.Column("last_mission_id", sa.Uuid(), nullable=True),
        sa.Column("caller", sa.String(100), nullable=False),
        _timestamp("created_at", server_default=True),
        _timestamp("updated_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
        sa.CheckConstraint("(cron IS NULL) <> (interval_s IS NULL)", name="ck_schedules_cron_or_interval"),
        sa.CheckConstraint(_one_of("overlap", OVERLAP), name="ck_schedules_overlap"),
    )
    op.create_index("ix_schedules_due", "schedules", ["next_due_at"], postgresql_where=sa.text("NOT paused"))
    op.create_table(
        "schedule_fires",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("schedule_id", sa.Uuid(), nullable=False),
        _timestamp("fire_time"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("mission_id", sa.Uuid(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at", server_default=True),
        _timestamp("updated_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_fires"),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name="fk_schedule_fires_schedule_id_schedules", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_fires_schedule_id_fire_time"),
        sa.CheckConstraint(_one_of("outcome", FIRE_OUTCOMES), name="ck_schedule_fires_outcome"),
        sa.CheckConstraint(_one_of("kind", FIRE_KINDS), name="ck_schedule_fires_kind"),
    )
    op.create_table(
        "triggers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=True),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("filter", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(500), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("budget_usd", sa.Numeric(18, 8), nullable=True),
        sa.Column("budget_tokens", sa.BigInteger(), nullable=True),
        sa.Column("caller", sa.String(100), nullable=False),
        _timestamp("created_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name="pk_triggers"),
        sa.UniqueConstraint("name", name="uq_triggers_name"),
    )
    op.create_index("ix_triggers_event", "triggers", ["event"])
    op.create_table(
        "trigger_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("mission_id", sa.Uuid(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("received_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_deliveries"),
        sa.ForeignKeyConstraint(
            ["trigger_id"], ["triggers.id"], name="fk_trigger_deliveries_trigger_id_triggers", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("trigger_id", "delivery_id", name="uq_trigger_deliveries_trigger_id_delivery_id"),
        sa.CheckConstraint(_one_of("outcome", DELIVERY_OUTCOMES), name="ck_trigger_deliveries_outcome"),
    )
    op.create_index("ix_trigger_deliveries_trigger_id_received_at", "trigger_deliveries", ["trigger_id", "received_at"])
    op.create_table(
        "events",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("missions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("caller", sa.String(100), nullable=False),
        _timestamp("received_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("trigger_deliveries")
    op.drop_table("triggers")
    op.drop_table("schedule_fires")
    op.drop_table("schedules")
    op.drop_index("ix_missions_trigger_created_at", table_name="missions")
    op.drop_column("missions", "trigger")
