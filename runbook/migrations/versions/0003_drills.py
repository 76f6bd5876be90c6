"""DR restore drills

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from runbook.catalog.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(63), nullable=False, index=True),
        sa.Column("backup_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("fell_back_from", sa.String(64), nullable=True),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("rpo_seconds", sa.Float(), nullable=True),
        sa.Column("rto_target_seconds", sa.Float(), nullable=True),
        sa.Column("rpo_target_seconds", sa.Float(), nullable=True),
        sa.Column("timings", sa.Text(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("scratch", sa.String(1024), nullable=True),
        sa.Column("kept", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("drills")
