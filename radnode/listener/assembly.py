"""Study assembly: a study is complete when its sender says so and it looks whole, or when it has been quiet.

Two ways to ``complete``: (1) the association that delivered the study was released after its last instance
and the next stage's completeness check (``StudySink.ready_on_release``: the series its routed applications
need are present and plausibly whole) says yes — within a tick of the release; (2) the quiet period expired
(the fallback, and the only way when the check says no or is absent). The reason is kept on the study.

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

from radnode.store.studies import (
    ReleasedStudy,
    StudyCompleted,
    complete_quiet_studies,
    complete_study,
    mark_handed_off,
    pending_handoffs,
    released_studies,
)

log = structlog.get_logger(__name__)


class StudySink(Protocol):
    """The next stage (routing) receives completed studies through this."""

    def study_completed(self, event: StudyCompleted) -> None: ...


class ReadinessCheck(Protocol):
    """Says whether a released study is whole enough to start (a reason), or not yet (None)."""

    def ready_on_release(self, study: ReleasedStudy) -> str | None: ...


class LogSink:
    """A sink that only logs (the assembler already does): for ingest-only use."""

    def study_completed(self, event: StudyCompleted) -> None:
        return None


class Assembler:
    """Runs ``tick`` every *interval* seconds in a daemon thread, and at once when :meth:`kick`ed (a release)."""

    def __init__(self, sessions: sessionmaker[Session], sink: StudySink, interval: float = 1.0) -> None:
        self._sessions = sessions
        self._sink = sink
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: Released studies the check said "not yet" to, by the last_received_at it saw: not re-checked
        #: until another instance or release arrives.
        self._not_ready: dict[str, float] = {}

    def kick(self) -> None:
        """A release was recorded: check now rather than at the next interval."""
        self._wake.set()

    def _complete_released(self, now: float | None) -> None:
        check = getattr(self._sink, "ready_on_release", None)
        if check is None:
            return
        with self._sessions() as session:
            candidates = released_studies(session)
        live = {c.study_instance_uid for c in candidates}
        self._not_ready = {uid: t for uid, t in self._not_ready.items() if uid in live}
        for study in candidates:
            if self._not_ready.get(study.study_instance_uid) == study.last_received_at:
                continue
            try:
                reason = check(study)
            except Exception as exc:  # the check must never stop assembly; the quiet period still applies
                log.warning("completeness check failed", study_uid=study.study_instance_uid, error=str(exc)[:300])
                reason = None
            if reason is None:
                self._not_ready[study.study_instance_uid] = study.last_received_at
                continue
            with self._sessions.begin() as session:
                complete_study(session, study.study_instance_uid, study.last_received_at, reason, now)

    def tick(self, now: float | None = None) -> list[StudyCompleted]:
        """Complete released-and-whole and quiet studies; hand off every pending generation."""
        self._complete_released(now)
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
                reason=event.reason,
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
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception as exc:  # keep assembling after a transient DB error
                log.error("assembly tick failed", error=str(exc)[:300])
