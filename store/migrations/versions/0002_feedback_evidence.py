"""feedback evidence spans (imported datasets' gold evidence, for RLGF)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 23:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("evidence")
