"""metric samples for capacity reports: one row per resource per moment

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from runbook.catalog.db import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("resource", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(63), nullable=False, index=True),
        sa.Column("target", sa.String(63), nullable=False, index=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("limit", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.UniqueConstraint("resource", "time", name="uq_metric_samples_resource_time"),
    )
    op.create_index("ix_metric_samples_resource_time", "metric_samples", ["resource", "time"])


def downgrade() -> None:
    op.drop_index("ix_metric_samples_resource_time", table_name="metric_samples")
    op.drop_table("metric_samples")
