"""Study assembly: a timer turns quiet studies into StudyCompleted events.

Completeness is a transition in the index (``receiving → complete``), not a
folder scan. Each completed generation is handed to the next stage through a
``StudySink``; only when the sink returns is the hand-off recorded, so a
crash between the two re-delivers the event at the next start
(at-least-once; the routing stage is idempotent by study and generation).
"""

from __future__ import annotations

import threading
from typing import Protocol

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.store.studies import StudyCompleted, complete_quiet_studies, mark_handed_off, pending_handoffs

log = structlog.get_logger(__name__)


class StudySink(Protocol):
    """The next stage (routing) receives completed studies through this."""

    def study_completed(self, event: StudyCompleted) -> None: ...


class LogSink:
    """A sink that only logs (the assembler already does): for ingest-only use."""

    def study_completed(self, event: StudyCompleted) -> None:
        return None


class Assembler:
    """Runs ``tick`` every *interval* seconds in a daemon thread."""

    def __init__(self, sessions: sessionmaker[Session], sink: StudySink, interval: float = 1.0) -> None:
        self._sessions = sessions
        self._sink = sink
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> list[StudyCompleted]:
        """Complete quiet studies and hand off every pending generation."""
        with self._sessions.begin() as session:
            complete_quiet_studies(session, now)
        with self._sessions() as session:
            pending = pending_handoffs(session)
        delivered = []
        for event in pending:
            log.info(
                "study complete",
                study_uid=event.study_instance_uid,
                generation=event.generation,
                update=event.is_update,
                calling_ae=event.calling_ae,
                called_ae=event.called_ae,
                series=len(event.series),
                instances=event.instance_count,
            )
            try:
                self._sink.study_completed(event)
            except Exception as exc:
                log.error("study hand-off failed; will retry", study_uid=event.study_instance_uid, error=str(exc)[:300])
                continue
            with self._sessions.begin() as session:
                mark_handed_off(session, event.study_instance_uid, event.generation)
            delivered.append(event)
        return delivered

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="radnode-assembler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception as exc:  # keep assembling after a transient DB error
                log.error("assembly tick failed", error=str(exc)[:300])
