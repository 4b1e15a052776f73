"""The outbox: publish every queued job the store holds that the broker has
not yet confirmed. A job committed while the broker was down is published
when it comes back; a crash between publish and bookkeeping re-publishes,
which the worker's claim turns into a no-op. Urgent jobs are published
first (and with their priority), so a backlog of elective jobs committed
while the broker was down does not hold them back either.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.store import jobs as jobstore
from radnode.queue.base import Broker, BrokerUnavailable

log = structlog.get_logger(__name__)


class Outbox:
    def __init__(self, sessions: sessionmaker[Session], broker: Broker, interval: float = 2.0) -> None:
        self._sessions = sessions
        self._broker = broker
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def flush(self) -> int:
        """Publish what is pending now; return how many were published."""
        with self._lock:
            with self._sessions() as session:
                pending = [(r.job_id, r.application, r.message().model_dump_json(), r.priority) for r in jobstore.unpublished(session)]
            published = 0
            for job_id, application, body, priority in pending:
                try:
                    self._broker.publish(application, body.encode(), job_id, priority=priority)
                except BrokerUnavailable as exc:
                    log.warning("broker unavailable; job stays in the outbox", job_id=job_id, error=str(exc)[:200])
                    break
                with self._sessions.begin() as session:
                    jobstore.mark_published(session, job_id)
                published += 1
            return published

    def kick(self) -> None:
        """Ask for a flush soon (after the router committed new jobs)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="radnode-outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush()
            except Exception as exc:  # a DB hiccup must not end the outbox
                log.error("outbox flush failed", error=str(exc)[:300])
            self._wake.wait(self._interval)
            self._wake.clear()
