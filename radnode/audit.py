"""The audit trail a security officer reads: who did what, when, from where.

Entries live in the job store's ``audit`` table (``jobs.store.record_event``):
logins and their failures, user and token changes, routing edits, results
viewed, and from the DICOM listener every association accepted or refused
(with the reason) and every study received. ``radnode audit export --since``
writes them as JSON lines for a SIEM.

The listener must not wait on the database inside an association (or, for
refusals, inside the accept loop), so its entries go through
:class:`AuditQueue`, a daemon thread that commits them in batches.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.store.jobs import AuditRow, record_event

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    detail: str = ""
    source: str | None = None
    study_instance_uid: str | None = None


class AuditQueue:
    """Batched, non-blocking audit writes for threads that must answer fast."""

    def __init__(self, sessions: sessionmaker[Session], *, max_queue: int = 10_000) -> None:
        self._sessions = sessions
        self._queue: queue.Queue[AuditEntry | None] = queue.Queue(maxsize=max_queue)
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="radnode-audit", daemon=True)
        self._thread.start()

    def submit(self, entry: AuditEntry) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            # Under a flood the oldest-first queue is full: count, never block the listener.
            self._dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [e for e in batch if e is not None]
            if self._dropped:
                entries.append(AuditEntry("radnode", "audit:dropped", f"{self._dropped} entries dropped (queue full)"))
                self._dropped = 0
            if entries:
                try:
                    with self._sessions.begin() as s:
                        for e in entries:
                            record_event(s, e.actor, e.action, detail=e.detail, source=e.source, study_instance_uid=e.study_instance_uid)
                except Exception as exc:  # noqa: BLE001 - the audit thread must survive a database hiccup
                    log.error("audit write failed", error=str(exc)[:200], entries=len(entries))
            if None in batch:
                return


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def export(session: Session, since: float | None = None, until: float | None = None) -> Iterator[dict[str, Any]]:
    """Audit entries in time order as plain dicts (one JSON line each)."""
    stmt = select(AuditRow).order_by(AuditRow.at, AuditRow.id)
    if since is not None:
        stmt = stmt.where(AuditRow.at >= since)
    if until is not None:
        stmt = stmt.where(AuditRow.at < until)
    for row in session.execute(stmt.execution_options(yield_per=1000)).scalars():
        yield {
            "id": row.id,
            "time": _iso(row.at),
            "actor": row.actor,
            "action": row.action,
            "source": row.source,
            "job_id": row.job_id,
            "study_instance_uid": row.study_instance_uid,
            "detail": row.detail,
        }
