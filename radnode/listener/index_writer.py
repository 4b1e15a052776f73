"""Batched writes of instance records to the index.

The association thread must answer fast, so it only queues a record; this
thread commits them in batches. The spool already holds the instance durably:
if the process dies before a batch commits, ``reconcile`` re-indexes the
orphan files at the next start, so nothing acknowledged is lost.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from radnode.listener.spool import Spool
from radnode.store.studies import InstanceRecord, known_paths, mark_released, record_instances

log = structlog.get_logger(__name__)

_STOP = object()


@dataclass(frozen=True)
class _Released:
    """An association that delivered these studies was released; queued behind its instances."""

    study_instance_uids: frozenset[str]
    at: float


class IndexWriter:
    """A daemon thread committing queued InstanceRecords in batches.

    A release of an association goes through the same queue, so it is committed with or after the records of
    the instances that association delivered — never before them; *on_release* (study assembly's wake-up)
    runs once it is committed.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = 500,
        max_delay: float = 0.05,
        on_release: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._on_release = on_release
        self._queue: queue.Queue[object] = queue.Queue()
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._thread = threading.Thread(target=self._run, name="radnode-index-writer", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._thread.start()

    def submit(self, record: InstanceRecord) -> None:
        self._idle.clear()
        self._queue.put(record)

    def released(self, study_instance_uids: Iterable[str], at: float | None = None) -> None:
        """Record that an association delivering these studies was released (after its instances)."""
        uids = frozenset(study_instance_uids)
        if uids:
            self._queue.put(_Released(uids, time.time() if at is None else at))

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted so far is committed."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if not (item is _STOP or isinstance(item, (threading.Event, _Released))):
                # Let the batch gather while this thread sleeps: waiting on the queue instead woke it for
                # every record (a thread hand-off and a turn of the interpreter lock per image, issue 18).
                time.sleep(self._max_delay)
            batch: list[InstanceRecord] = []
            releases: list[_Released] = []
            waiters: list[threading.Event] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                elif isinstance(item, _Released):
                    releases.append(item)
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if stop or len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._commit(batch, releases)
            if releases:
                self._on_release()
            for w in waiters:
                w.set()
            if stop:
                return

    def _commit(self, batch: list[InstanceRecord], releases: list[_Released] = ()) -> None:  # type: ignore[assignment]
        if not batch and not releases:
            return
        delay = 0.1
        while True:
            try:
                with self._sessions.begin() as session:
                    record_instances(session, batch)
                    for release in releases:  # after the records: a release never precedes its instances
                        mark_released(session, release.study_instance_uids, release.at)
                return
            except Exception as exc:  # the database may be locked or restarting
                log.warning("index write failed; retrying", error=str(exc)[:200], records=len(batch))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def record_from_file(spool: Spool, path: Path, quiet_seconds_for) -> InstanceRecord | None:  # type: ignore[no-untyped-def]
    """Rebuild an InstanceRecord from a spooled file (file meta carries the AEs)."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        log.warning("unreadable spool file skipped", path=str(path), error=str(exc)[:200])
        return None
    meta = ds.file_meta
    called = str(meta.get("ReceivingApplicationEntityTitle", "") or "").strip()
    try:
        series_number = int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    return InstanceRecord(
        sop_instance_uid=path.stem,
        study_instance_uid=path.parent.parent.name,
        series_instance_uid=path.parent.name,
        sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")),
        transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "")),
        modality=str(ds.get("Modality", "") or "")[:16],
        series_number=series_number,
        series_description=str(ds.get("SeriesDescription", "") or "")[:64],
        accession=str(ds.get("AccessionNumber", "") or "")[:16],
        calling_ae=str(meta.get("SourceApplicationEntityTitle", "") or "").strip(),
        called_ae=called,
        received_at=path.stat().st_mtime,
        size=path.stat().st_size,
        path=path.relative_to(spool.root).as_posix(),
        quiet_seconds=quiet_seconds_for(called),
    )


def reconcile(spool: Spool, sessions: sessionmaker[Session], quiet_seconds_for) -> int:  # type: ignore[no-untyped-def]
    """Index every spooled file the index lacks (after a crash); return count."""
    removed = spool.clean_incoming()
    if removed:
        log.info("removed partial files from an interrupted write", count=removed)
    spool.repair_claims()
    with sessions() as session:
        indexed = known_paths(session)
    missing = []
    for path in spool.iter_instances():
        rel = path.relative_to(spool.root).as_posix()
        if rel not in indexed:
            rec = record_from_file(spool, path, quiet_seconds_for)
            if rec is not None:
                missing.append(rec)
    for start in range(0, len(missing), 500):
        with sessions.begin() as session:
            record_instances(session, missing[start : start + 500])
    if missing:
        log.info("re-indexed spooled instances after restart", count=len(missing))
    return len(missing)
