"""Alembic environment: runs radnode's migrations on the connection given by
``radnode.store.db.migrate`` (never reads alembic.ini or the environment)."""

from __future__ import annotations

from alembic import context

from radnode.store.db import Base
import radnode.store.studies  # noqa: F401  (register tables)
import radnode.store.jobs  # noqa: F401
import radnode.store.accounts  # noqa: F401
import radnode.store.pulls  # noqa: F401
import radnode.store.routing_history  # noqa: F401
import radnode.store.corrections  # noqa: F401
import radnode.store.deid_map  # noqa: F401

target_metadata = Base.metadata
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
