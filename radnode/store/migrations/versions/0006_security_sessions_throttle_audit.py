"""Server-side web sessions, login throttling, where an audited action came from, de-identification map.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
    )
    op.create_index("ix_web_sessions_username", "web_sessions", ["username"])
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.Float(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=True),
    )
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("source", sa.String(64), nullable=True))
    op.create_table(
        "deid_map",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("pseudonym", sa.String(128), primary_key=True),
        sa.Column("original", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deid_map")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("source")
    op.drop_table("login_throttle")
    op.drop_index("ix_web_sessions_username", "web_sessions")
    op.drop_table("web_sessions")
