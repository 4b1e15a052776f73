"""Ingest: the instance index and study assembly state.

Revision ID: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("sop_instance_uid", sa.String(64), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(64), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("called_ae", sa.String(16), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
    )
    op.create_index("ix_instances_study_instance_uid", "instances", ["study_instance_uid"])
    op.create_index("ix_instances_series_instance_uid", "instances", ["series_instance_uid"])
    op.create_table(
        "studies",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("accession", sa.String(16), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("called_ae", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("first_received_at", sa.Float(), nullable=False),
        sa.Column("last_received_at", sa.Float(), nullable=False),
        sa.Column("quiet_seconds", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("handed_off_generation", sa.Integer(), nullable=False),
    )
    op.create_index("ix_studies_state_last", "studies", ["state", "last_received_at"])


def downgrade() -> None:
    op.drop_table("studies")
    op.drop_table("instances")
