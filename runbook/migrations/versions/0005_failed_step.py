"""record the step a failed backup or drill died in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("backups", sa.Column("failed_step", sa.String(32), nullable=True))
    op.add_column("drills", sa.Column("failed_step", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in ("drills", "backups"):
        with op.batch_alter_table(table) as batch:  # SQLite drops columns by copying the table
            batch.drop_column("failed_step")
