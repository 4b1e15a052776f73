"""The listener stage as a restartable service: reconcile the spool with the
index, start the SCP (in one or several processes sharing the port), and run
study assembly. ``radnode listen`` and ``radnode serve`` both use this.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
import threading
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from radnode.audit import AuditQueue
from radnode.listener.assembly import Assembler, LogSink, StudySink
from radnode.listener.index_writer import IndexWriter, reconcile
from radnode.listener.server import start_scp
from radnode.listener.spool import Spool
from radnode.settings import Settings
from radnode.store.db import make_engine, make_sessionmaker, open_store

log = structlog.get_logger(__name__)


def _child_main(settings: Settings, log_level: str, log_format: str) -> None:
    """Entry point of an extra listener process (spawned, shares the port)."""
    from radnode.logconfig import configure_logging

    configure_logging(log_level, log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = make_engine(settings.database_url)
    writer = IndexWriter(make_sessionmaker(engine))
    audit = AuditQueue(make_sessionmaker(engine))
    spool = open_spool(settings)
    ae, _server = start_scp(settings, spool, writer, reuse_port=True, audit=audit)
    settle_heap()
    stop.wait()
    ae.shutdown()
    spool.close()
    writer.close()
    audit.close()


def open_spool(settings: Settings, *, journal: bool = True) -> Spool:
    """The spool as the listener settings want it (fsync, journal); replays the journal after a crash.

    ``journal=False`` (a C-GET retrieve's short-lived spool): every instance is fsync'ed on its own,
    so a retrieve never claims a journal slot (128 MiB of segments) of its own.
    """
    listener = settings.listener
    return Spool(
        settings.spool_dir,
        fsync=listener.fsync,
        journal=listener.journal and journal,
        segment_size=listener.journal_segment_mib * 1024 * 1024,
    )


def settle_heap() -> None:
    """Move every object alive now (modules, dictionaries, settings) out of the garbage collector's sight.

    Why: per instance the receive path allocates a few hundred short-lived
    objects, so the collector runs often, and each full collection walked the
    whole heap of imported libraries (pydicom's dictionaries, SQLAlchemy,
    pynetdicom): ~10 % of the listener's CPU per image in a profile (issue 18).
    Frozen objects are never collected, which is what start-up objects are.
    """
    gc.collect()
    gc.freeze()


class ListenerService:
    """Owns the spool, the index writer, the SCP(s) and the assembler."""

    def __init__(
        self,
        settings: Settings,
        sink: StudySink | None = None,
        store: tuple[Engine, sessionmaker[Session]] | None = None,
    ) -> None:
        self.settings = settings
        # A process that already opened the store (serve, listen) shares it.
        self._owns_store = store is None
        self.engine, self.sessions = store if store is not None else open_store(settings)
        # Replays the journal of a crashed run, so reconcile (start) sees every acknowledged instance.
        self.spool = open_spool(settings)
        self.assembler = Assembler(self.sessions, sink or LogSink(), settings.listener.assembly_interval)
        self._writer: IndexWriter | None = None
        self.audit: AuditQueue | None = None
        self._ae: Any = None
        self._children: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> None:
        reconcile(self.spool, self.sessions, self.settings.quiet_seconds_for)
        self._writer = IndexWriter(self.sessions, on_release=self.assembler.kick)
        self.audit = AuditQueue(self.sessions)
        extra = self.settings.listener.processes - 1
        self._ae, _ = start_scp(self.settings, self.spool, self._writer, reuse_port=extra > 0, audit=self.audit)
        if extra:
            ctx = multiprocessing.get_context("spawn")
            lvl, fmt = self.settings.logging.level, self.settings.logging.format
            for _ in range(extra):
                proc = ctx.Process(
                    target=_child_main, args=(self.settings, lvl, fmt), daemon=True
                )
                proc.start()
                self._children.append(proc)
        self.assembler.start()
        settle_heap()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def stop(self) -> None:
        for proc in self._children:
            proc.terminate()
        if self._ae is not None:
            self._ae.shutdown()
        for proc in self._children:
            proc.join(timeout=15)
        self.spool.close()
        if self._writer is not None:
            self._writer.close()
        if self.audit is not None:
            self.audit.close()
        self.assembler.stop()
        if self._owns_store:
            self.engine.dispose()
        log.info("dicom listener stopped")
