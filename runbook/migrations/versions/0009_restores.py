"""restores: one row per restore of a backup into a database or a folder

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from runbook.catalog.db import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restores",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(63), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=True),
        sa.Column("into", sa.String(1024), nullable=False),
        sa.Column("schema_name", sa.String(63), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("fell_back_from", sa.String(64), nullable=True),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("timings", sa.Text(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("hooks", sa.Text(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_step", sa.String(32), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("restores")
