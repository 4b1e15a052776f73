"""The instance index and study assembly state.

The spool on disk is the source of truth for what was received; this index
records each instance (study, series, SOP class, transfer syntax, calling and
called AE, time) so that study completeness is a query, not a folder scan.
A study moves ``receiving → complete`` after its quiet period; an instance
arriving later re-opens it as an update (``generation`` + 1). A completed
generation is handed to the next stage until that stage accepts it
(``handed_off_generation``), so a crash between the two loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from sqlalchemy import Float, Index, Integer, String, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from radnode.store.db import Base

RECEIVING = "receiving"
COMPLETE = "complete"


class InstanceRow(Base):
    __tablename__ = "instances"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[float] = mapped_column(Float)
    size: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(300))


class StudyRow(Base):
    __tablename__ = "studies"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    accession: Mapped[str] = mapped_column(String(16), default="")
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=RECEIVING)
    first_received_at: Mapped[float] = mapped_column(Float)
    last_received_at: Mapped[float] = mapped_column(Float)
    quiet_seconds: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    handed_off_generation: Mapped[int] = mapped_column(Integer, default=0)
    #: When an association that delivered instances of the study was released (not aborted).
    released_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Why the study was declared complete ("quiet for 10 s", "association released; …").
    completed_reason: Mapped[str] = mapped_column(String(300), default="")

    __table_args__ = (Index("ix_studies_state_last", "state", "last_received_at"),)


@dataclass(frozen=True)
class InstanceRecord:
    """What the listener learned about one stored instance."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    series_number: int | None
    series_description: str
    accession: str
    calling_ae: str
    called_ae: str
    received_at: float
    size: int
    path: str
    quiet_seconds: float


@dataclass(frozen=True)
class SeriesCount:
    series_instance_uid: str
    instances: int
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""


@dataclass(frozen=True)
class StudyCompleted:
    """The event handed to routing when a study has been quiet long enough.

    ``generation`` > 1 means the study was re-opened by late instances and
    this is an update of an earlier completion.
    """

    study_instance_uid: str
    accession: str
    calling_ae: str
    called_ae: str
    generation: int
    series: tuple[SeriesCount, ...] = field(default_factory=tuple)
    reason: str = ""

    @property
    def is_update(self) -> bool:
        return self.generation > 1

    @property
    def instance_count(self) -> int:
        return sum(s.instances for s in self.series)


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def record_instances(session: Session, records: Sequence[InstanceRecord]) -> None:
    """Upsert a batch of instances and touch (or re-open) their studies.

    A duplicate SOP Instance UID replaces the earlier row, so it is counted
    once. Upserts make concurrent listener processes safe without locks.
    """
    if not records:
        return
    insert = _insert(session)
    rows = [
        {
            "sop_instance_uid": r.sop_instance_uid,
            "study_instance_uid": r.study_instance_uid,
            "series_instance_uid": r.series_instance_uid,
            "sop_class_uid": r.sop_class_uid,
            "transfer_syntax_uid": r.transfer_syntax_uid,
            "modality": r.modality,
            "series_number": r.series_number,
            "series_description": r.series_description,
            "calling_ae": r.calling_ae,
            "called_ae": r.called_ae,
            "received_at": r.received_at,
            "size": r.size,
            "path": r.path,
        }
        for r in records
    ]
    stmt = insert(InstanceRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=[InstanceRow.sop_instance_uid],
        set_={k: stmt.excluded[k] for k in rows[0] if k != "sop_instance_uid"},
    )
    session.execute(stmt, rows)

    latest: dict[str, InstanceRecord] = {}
    first: dict[str, float] = {}
    for r in records:
        prev = latest.get(r.study_instance_uid)
        if prev is None or r.received_at >= prev.received_at:
            latest[r.study_instance_uid] = r
        first[r.study_instance_uid] = min(first.get(r.study_instance_uid, r.received_at), r.received_at)
    for uid, r in latest.items():
        ins = insert(StudyRow).values(
            study_instance_uid=uid,
            accession=r.accession,
            calling_ae=r.calling_ae,
            called_ae=r.called_ae,
            state=RECEIVING,
            first_received_at=first[uid],
            last_received_at=r.received_at,
            quiet_seconds=r.quiet_seconds,
            generation=1,
            handed_off_generation=0,
        )
        ins = ins.on_conflict_do_update(
            index_elements=[StudyRow.study_instance_uid],
            set_={
                "last_received_at": func.max(StudyRow.last_received_at, ins.excluded.last_received_at)
                if session.get_bind().dialect.name == "sqlite"
                else func.greatest(StudyRow.last_received_at, ins.excluded.last_received_at),
                "generation": case(
                    (StudyRow.state == COMPLETE, StudyRow.generation + 1), else_=StudyRow.generation
                ),
                "state": RECEIVING,
                "calling_ae": ins.excluded.calling_ae,
                "called_ae": ins.excluded.called_ae,
            },
        )
        session.execute(ins)


def series_counts(session: Session, study_instance_uid: str) -> tuple[SeriesCount, ...]:
    rows = session.execute(
        select(
            InstanceRow.series_instance_uid,
            func.count(),
            func.max(InstanceRow.modality),
            func.max(InstanceRow.series_number),
            func.max(InstanceRow.series_description),
        )
        .where(InstanceRow.study_instance_uid == study_instance_uid)
        .group_by(InstanceRow.series_instance_uid)
    ).all()
    counts = [SeriesCount(uid, n, mod or "", num, desc or "") for uid, n, mod, num, desc in rows]
    counts.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid))
    return tuple(counts)


def complete_quiet_studies(session: Session, now: float | None = None) -> list[str]:
    """Move every study quiet for its period to ``complete``; return their UIDs.

    The update is conditional on the ``last_received_at`` that was read, so an
    instance that lands concurrently keeps its study open.
    """
    now = time.time() if now is None else now
    due = session.execute(
        select(StudyRow.study_instance_uid, StudyRow.last_received_at, StudyRow.quiet_seconds).where(
            StudyRow.state == RECEIVING, StudyRow.last_received_at + StudyRow.quiet_seconds <= now
        )
    ).all()
    completed = []
    for uid, last, quiet in due:
        res = session.execute(
            update(StudyRow)
            .where(
                StudyRow.study_instance_uid == uid,
                StudyRow.state == RECEIVING,
                StudyRow.last_received_at == last,
            )
            .values(state=COMPLETE, completed_at=now, completed_reason=f"quiet for {quiet:g} s")
        )
        if res.rowcount:  # type: ignore[attr-defined]
            completed.append(uid)
    return completed


def mark_released(session: Session, study_instance_uids: Iterable[str], at: float) -> None:
    """An association that delivered instances of these studies was released (the sender said "done")."""
    uids = sorted(set(study_instance_uids))
    if uids:
        session.execute(
            update(StudyRow).where(StudyRow.study_instance_uid.in_(uids), StudyRow.state == RECEIVING).values(released_at=at)
        )


@dataclass(frozen=True)
class ReleasedStudy:
    """A study still receiving whose last association was released after its last instance."""

    study_instance_uid: str
    last_received_at: float
    calling_ae: str
    called_ae: str


def released_studies(session: Session) -> list[ReleasedStudy]:
    """Studies whose sender released the association after the last instance arrived: candidates for
    completion by signal (the completeness check decides), before their quiet period ends."""
    rows = session.execute(
        select(StudyRow.study_instance_uid, StudyRow.last_received_at, StudyRow.calling_ae, StudyRow.called_ae).where(
            StudyRow.state == RECEIVING, StudyRow.released_at.is_not(None), StudyRow.released_at >= StudyRow.last_received_at
        )
    ).all()
    return [ReleasedStudy(*row) for row in rows]


def complete_study(session: Session, study_instance_uid: str, last_received_at: float, reason: str, now: float | None = None) -> bool:
    """Declare one study complete for *reason*, unless an instance arrived since *last_received_at* was read."""
    res = session.execute(
        update(StudyRow)
        .where(
            StudyRow.study_instance_uid == study_instance_uid,
            StudyRow.state == RECEIVING,
            StudyRow.last_received_at == last_received_at,
        )
        .values(state=COMPLETE, completed_at=time.time() if now is None else now, completed_reason=reason[:300])
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


def pending_handoffs(session: Session) -> list[StudyCompleted]:
    """Completed generations that the next stage has not yet accepted."""
    rows = session.scalars(
        select(StudyRow).where(StudyRow.state == COMPLETE, StudyRow.handed_off_generation < StudyRow.generation)
    ).all()
    return [
        StudyCompleted(
            study_instance_uid=row.study_instance_uid,
            accession=row.accession,
            calling_ae=row.calling_ae,
            called_ae=row.called_ae,
            generation=row.generation,
            series=series_counts(session, row.study_instance_uid),
            reason=row.completed_reason or "",
        )
        for row in rows
    ]


def mark_handed_off(session: Session, study_instance_uid: str, generation: int) -> None:
    session.execute(
        update(StudyRow)
        .where(StudyRow.study_instance_uid == study_instance_uid, StudyRow.handed_off_generation < generation)
        .values(handed_off_generation=generation)
    )


def known_paths(session: Session) -> set[str]:
    return set(session.scalars(select(InstanceRow.path)).all())


def list_studies(session: Session, limit: int = 100) -> list[tuple[StudyRow, tuple[SeriesCount, ...]]]:
    rows = session.scalars(select(StudyRow).order_by(StudyRow.last_received_at.desc()).limit(limit)).all()
    return [(row, series_counts(session, row.study_instance_uid)) for row in rows]


def iter_study_paths(session: Session, study_instance_uid: str) -> Iterable[str]:
    return session.scalars(
        select(InstanceRow.path).where(InstanceRow.study_instance_uid == study_instance_uid)
    ).all()
