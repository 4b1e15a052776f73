"""Database engine and session factory shared by every stage.

SQLite (a file in the data folder) is the embedded default; PostgreSQL is
used by URL when several machines share the state. SQLite runs in WAL mode
with a busy timeout so that several listener processes can write at once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker

if TYPE_CHECKING:
    from radnode.settings import Settings


class Base(DeclarativeBase):
    """Declarative base for every radnode table."""


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, enable WAL and a generous busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)


MIGRATIONS = Path(__file__).with_name("migrations")


#: Any constant: the key of the PostgreSQL advisory lock that serialises radnode's migrations.
_PG_MIGRATION_LOCK = 0x7261646E  # "radn"


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time for a SQLite file (``listen``, ``worker`` and ``web`` start together).

    SQLite runs DDL outside a transaction under the Python driver, so two processes creating a fresh
    database would both try ``CREATE TABLE``; an exclusive lock on a file beside the database orders them.
    """
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to *revision* with alembic; data is kept on upgrade. Safe to call from several
    processes at once (a file lock for SQLite, an advisory lock for PostgreSQL)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def create_schema(engine: Engine) -> None:
    """Create or upgrade every table (every process calls this at start)."""
    migrate(engine)


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file 0600 (its -wal/-shm files inherit the mode), or tighten it."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return
    path = Path(url[len("sqlite:///"):])
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if p.exists():
                os.chmod(p, 0o600)
    except OSError:
        pass  # a read-only or foreign file: sqlite reports the real problem


def open_store(settings: "Settings") -> tuple[Engine, sessionmaker]:  # type: ignore[type-arg]
    """Connect to the configured store and bring its schema up to date."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _private_sqlite_file(settings.database_url)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    return engine, make_sessionmaker(engine)
