"""grounded answers: which reader answered, whether the evidence supports it, its citation, why not

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("answer") as batch:
        batch.add_column(sa.Column("reader", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("supported", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("citation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("proposed", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answer") as batch:
        for column in ("proposed", "reason", "citation", "supported", "reader"):
            batch.drop_column(column)
