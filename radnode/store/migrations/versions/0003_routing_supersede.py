"""Routing decisions; job selection details, flags, supersession and worker leases.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("selection_json", sa.Text(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("flags_json", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("superseded_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.Float(), nullable=True))
    op.create_table(
        "routing_decisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("applications_json", sa.Text(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_routing_decisions_study_instance_uid", "routing_decisions", ["study_instance_uid"])


def downgrade() -> None:
    op.drop_table("routing_decisions")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
        batch.drop_column("superseded_by")
        batch.drop_column("flags_json")
        batch.drop_column("selection_json")
