"""Jobs: patient key and study date (for trends), per-destination send status.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("patient_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("study_date", sa.String(8), nullable=True))
        batch.add_column(sa.Column("sends_json", sa.Text(), nullable=False, server_default="{}"))
        batch.create_index("ix_jobs_patient_key", ["patient_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_patient_key")
        batch.drop_column("sends_json")
        batch.drop_column("study_date")
        batch.drop_column("patient_key")
