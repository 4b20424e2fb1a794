"""webhooks: a query's callback and the key that asked it, each key's signing secret, every delivery attempt

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("query", sa.Column("callback_url", sa.Text(), nullable=True))
    op.add_column("query", sa.Column("key_id", sa.Integer(), nullable=True))
    op.add_column("api_key", sa.Column("webhook_secret", sa.String(length=64), nullable=True))
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["query.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_webhook_delivery_query_id"), "webhook_delivery", ["query_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_delivery_query_id"), table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
    op.drop_column("api_key", "webhook_secret")
    op.drop_column("query", "key_id")
    op.drop_column("query", "callback_url")
