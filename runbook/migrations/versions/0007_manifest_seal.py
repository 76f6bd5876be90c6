"""keep the seal of each backup's manifest: its sha256 and one per part

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for backups committed before this revision: their first good verification seals them.
    op.add_column("backups", sa.Column("manifest_sha256", sa.String(64), nullable=True))
    op.add_column("backups", sa.Column("manifest_parts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backups") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("manifest_parts")
        batch.drop_column("manifest_sha256")
