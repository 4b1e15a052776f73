"""Studies: when the delivering association was released, and why the study was declared complete.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("released_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("completed_reason", sa.String(300), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("completed_reason")
        batch.drop_column("released_at")
