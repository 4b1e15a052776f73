"""The listener stage as a restartable service: reconcile the spool with the
index, start the SCP (in one or several processes accepting from one listening
socket, connections spread evenly: listener/balance.py), and run study assembly.
``radnode listen`` and ``radnode serve`` both use this.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import threading
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from radnode.audit import AuditQueue
from radnode.listener.assembly import Assembler, LogSink, StudySink
from radnode.listener.balance import AcceptBalance, Shared, new_shared
from radnode.listener.index_writer import IndexWriter, reconcile
from radnode.listener.server import start_scp
from radnode.listener.spool import Spool
from radnode.settings import Settings
from radnode.store.db import make_engine, make_sessionmaker, open_store

log = structlog.get_logger(__name__)

#: How long start() waits for the extra listener processes to serve (each imports radnode afresh).
CHILD_START_TIMEOUT = 60.0
#: Pause before an extra listener process that died is started again.
RESTART_PAUSE = 1.0
#: prctl option: the signal a process gets when its parent (thread) ends.
PR_SET_PDEATHSIG = 1


def _child_main(
    settings: Settings, log_level: str, log_format: str, listening: Any, shared: Shared, slot: int, ready: Any,
    parent: int, releases: Any,
) -> None:
    """Entry point of an extra listener process (spawned; accepts from the first process's socket)."""
    from radnode.logconfig import configure_logging

    _die_with(parent)

    configure_logging(log_level, log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = make_engine(settings.database_url)
    writer = IndexWriter(make_sessionmaker(engine), on_release=lambda: _tell(releases))
    audit = AuditQueue(make_sessionmaker(engine))
    spool = open_spool(settings)
    balance = AcceptBalance(shared, slot)
    ae, _server = start_scp(settings, spool, writer, audit=audit, shared_socket=listening, balance=balance)
    settle_heap()
    ready.set()
    stop.wait()
    balance.withdraw()
    ae.shutdown()
    spool.close()
    writer.close()
    audit.close()


def _die_with(parent: int) -> None:
    """Linux: have the kernel SIGKILL this process when the listener process that started it dies.

    Why: a node killed outright (SIGKILL, OOM) must not leave a process behind that keeps accepting
    on the port, or a restarted node could neither bind it nor own every connection. What a killed
    process acknowledged is in its journal slot, replayed at the next start. (The signal follows
    the thread that spawned the process: ``start`` and the supervisor live as long as the service.)
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _tell(releases: Any) -> None:
    """Wake the first process's study assembly: a release this process recorded may complete a study."""
    try:
        releases.send_bytes(b"r")
    except (OSError, ValueError):
        pass  # the first process is gone or stopping; its next start reconciles


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
        self._ctx = multiprocessing.get_context("spawn")
        #: Extra listener processes by their slot in the shared connection counts (listener/balance.py).
        self._children: dict[int, multiprocessing.process.BaseProcess] = {}
        self._ready: dict[int, Any] = {}
        self._shared: Shared | None = None
        self._releases_in: Any = None
        self._releases_out: Any = None
        self._listening: Any = None
        self._stopping = threading.Event()

    def start(self) -> None:
        reconcile(self.spool, self.sessions, self.settings.quiet_seconds_for)
        self._writer = IndexWriter(self.sessions, on_release=self.assembler.kick)
        self.audit = AuditQueue(self.sessions)
        processes = self.settings.listener.process_count()
        shared = new_shared(self._ctx, processes) if processes > 1 else None
        balance = AcceptBalance(shared, 0) if shared is not None else None
        self._ae, server = start_scp(self.settings, self.spool, self._writer, audit=self.audit, balance=balance)
        if shared is not None:
            self._shared, self._listening = shared, server.socket
            # Releases recorded by the other processes wake this process's study assembly at once
            # (else a study delivered through them waited for the next assembly interval).
            self._releases_in, self._releases_out = self._ctx.Pipe(duplex=False)
            threading.Thread(target=self._relay_releases, name="radnode-listener-releases", daemon=True).start()
            readiness = [self._spawn(slot) for slot in range(1, processes)]
            # Until a process is ready the others take its share; waiting here means "started" is all of them.
            if not all(ready.wait(CHILD_START_TIMEOUT) for ready in readiness):
                log.warning("listener processes slow to start", processes=processes, timeout_s=CHILD_START_TIMEOUT)
            threading.Thread(target=self._supervise, name="radnode-listener-supervisor", daemon=True).start()
        self.assembler.start()
        settle_heap()
        log.info("dicom listener serving", processes=processes)

    def _spawn(self, slot: int) -> Any:
        """Start the extra listener process of *slot*; return the event it sets once it serves."""
        ready = self._ctx.Event()
        lvl, fmt = self.settings.logging.level, self.settings.logging.format
        proc = self._ctx.Process(
            target=_child_main,
            args=(self.settings, lvl, fmt, self._listening, self._shared, slot, ready, os.getpid(), self._releases_out),
            daemon=True,
        )
        proc.start()
        self._children[slot] = proc
        self._ready[slot] = ready  # held: the child unpickles it after start() returns
        return ready

    def _relay_releases(self) -> None:
        """Kick study assembly for every release another listener process recorded."""
        inbox = self._releases_in
        while not self._stopping.is_set():
            try:
                if not inbox.poll(1.0):
                    continue
                inbox.recv_bytes()
            except (OSError, EOFError):
                return
            self.assembler.kick()

    def _supervise(self) -> None:
        """Restart an extra listener process that died; meanwhile the others take its share.

        Its associations were aborted with it; what it acknowledged is in its journal slot and
        spool, which the replacement (or the next start) replays.
        """
        from multiprocessing.connection import wait

        assert self._shared is not None
        while not self._stopping.is_set():
            by_sentinel = {proc.sentinel: slot for slot, proc in self._children.items()}
            for sentinel in wait(list(by_sentinel), timeout=1.0):
                slot = by_sentinel[sentinel]  # type: ignore[index]
                if self._stopping.is_set():
                    break
                proc = self._children[slot]
                dead = AcceptBalance(self._shared, slot)
                dead.withdraw()
                dead.forget_hosts()  # its connections died with it
                log.error("listener process died; restarting it", slot=slot, exitcode=proc.exitcode)
                self._stopping.wait(RESTART_PAUSE)  # a process that dies at once is not restarted in a tight loop
                if not self._stopping.is_set():
                    self._spawn(slot)
        # A process this thread started gets SIGKILL when the thread ends (PR_SET_PDEATHSIG follows the
        # spawning thread): stay until stop() has seen them finish their clean shutdown.
        for proc in list(self._children.values()):
            proc.join(timeout=20)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def stop(self) -> None:
        self._stopping.set()
        children = list(self._children.values())
        for proc in children:
            proc.terminate()
        if self._ae is not None:
            self._ae.shutdown()
        for proc in children:
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
