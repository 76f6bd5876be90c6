"""health runs, check results and check state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from runbook.catalog.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(4), nullable=True),
        sa.Column("kinds", sa.String(255), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "check_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey("health_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("at", UTCDateTime(), nullable=False, index=True),
        sa.Column("check", sa.String(255), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("threshold", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_check_results_key_at", "check_results", ["check", "target", "at"])
    op.create_table(
        "state",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("state")
    op.drop_index("ix_check_results_key_at", table_name="check_results")
    op.drop_table("check_results")
    op.drop_table("health_runs")
