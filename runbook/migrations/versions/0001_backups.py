"""backups, artifacts and verifications

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from runbook.catalog.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(63), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("verified_at", UTCDateTime(), nullable=True),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.Column("bytes_stored", sa.BigInteger(), nullable=True),
        sa.Column("bytes_logical", sa.BigInteger(), nullable=True),
        sa.Column("storage", sa.String(1024), nullable=False),
        sa.Column("manifest_key", sa.String(1024), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "backup_id",
            sa.String(64),
            sa.ForeignKey("backups.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("content", sa.String(32), nullable=False),
        sa.Column("codec", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("logical_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("verified_at", UTCDateTime(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
    )
    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "backup_id",
            sa.String(64),
            sa.ForeignKey("backups.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("problems", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("verifications")
    op.drop_table("artifacts")
    op.drop_table("backups")
