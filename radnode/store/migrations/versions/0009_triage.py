"""Jobs: queue priority, the last run's findings and whether one is critical (triage, issue 16).

Existing jobs become elective (priority 0) with no findings: results stored
before this revision kept no findings, so none is flagged after the fact.

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: on SQLite a batch here recreates the
    # table, and dropping the old one would cascade to the measurements.
    op.add_column("jobs", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("findings_json", sa.Text(), nullable=False, server_default="[]"))
    op.add_column("jobs", sa.Column("critical", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_jobs_critical", "jobs", ["critical"])


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35) for the same reason as above.
    op.drop_index("ix_jobs_critical", "jobs")
    for column in ("critical", "findings_json", "priority"):
        op.drop_column("jobs", column)
