"""labels and pins of backups (a label for people, keep_until for retention), and the
next steps a restore leaves the operator (a Redis RDB written to a folder)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from runbook.catalog.db import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for every backup taken before this revision: unlabelled, not pinned.
    op.add_column("backups", sa.Column("label", sa.String(63), nullable=True))
    op.add_column("backups", sa.Column("keep_until", UTCDateTime(), nullable=True))
    op.add_column("restores", sa.Column("next_steps", sa.Text(), nullable=True))  # JSON list


def downgrade() -> None:
    with op.batch_alter_table("restores") as batch:
        batch.drop_column("next_steps")
    with op.batch_alter_table("backups") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("keep_until")
        batch.drop_column("label")
