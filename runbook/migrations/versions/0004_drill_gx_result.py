"""keep each drill's Great Expectations result and Data Docs location

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("drills", sa.Column("gx_result", sa.Text(), nullable=True))
    op.add_column("drills", sa.Column("data_docs", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drills") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("data_docs")
        batch.drop_column("gx_result")
