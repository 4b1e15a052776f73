"""Series-type corrections by radiologists, with header features (classifier retraining).

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "classifier_corrections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_description", sa.Text(), nullable=False),
        sa.Column("predicted_label", sa.String(32), nullable=False),
        sa.Column("predicted_probability", sa.Float(), nullable=False),
        sa.Column("corrected_label", sa.String(32), nullable=False),
        sa.Column("role", sa.String(32), nullable=True),
        sa.Column("feature_version", sa.Integer(), nullable=False),
        sa.Column("features_json", sa.Text(), nullable=False),
        sa.Column("header_json", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_index("ix_classifier_corrections_job_id", "classifier_corrections", ["job_id"])
    op.create_index("ix_classifier_corrections_study_instance_uid", "classifier_corrections", ["study_instance_uid"])
    op.create_index("ix_classifier_corrections_series_instance_uid", "classifier_corrections", ["series_instance_uid"])


def downgrade() -> None:
    op.drop_table("classifier_corrections")
