"""Results that come back from an external analysis: re-identified, then on to the hospital's own PACS.

What radnode sent to an ``external: true`` destination was de-identified (PS3.15 basic profile) with the
pseudonyms kept in the node's own map. When that service returns objects (a SEG, an SR, a secondary
capture) to radnode's listener, they carry the *pseudonymous* Study Instance UID. Such a study is not
analysed again: every object is re-identified from the map (UIDs, patient module) and sent to the PACS and
DICOMweb destinations the original study's jobs send results to (never back to an external one), and the
routing record says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.model.jobs import Destination
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.store.deid_map import DeidMapRow

log = structlog.get_logger(__name__)


def original_study(sessions: sessionmaker[Session], study_instance_uid: str) -> str | None:
    """The original Study Instance UID when *study_instance_uid* is a pseudonym this node gave out."""
    with sessions() as session:
        row = session.get(DeidMapRow, ("uid", study_instance_uid))
        return row.original if row is not None else None


def return_destinations(sessions: sessionmaker[Session], original_uid: str) -> list[Destination]:
    """Where the original study's results go inside the hospital: its jobs' DICOM and DICOMweb destinations."""
    seen: dict[str, Destination] = {}
    with sessions() as session:
        rows = session.scalars(select(jobstore.JobRow).where(jobstore.JobRow.study_instance_uid == original_uid)).all()
        for row in rows:
            for dest in row.message().destinations:
                if dest.kind in ("dicom", "dicomweb") and not dest.external and not dest.notify:
                    seen.setdefault(dest.name, dest)
    return list(seen.values())


@dataclass
class ReturnOutcome:
    original_study_uid: str
    restored: list[Path] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def explanation(self) -> str:
        parts = [f"returned from an external analysis: {len(self.restored)} object(s) re-identified"]
        parts += [f"sent to {name}: {n}" for name, n in self.sent.items()]
        parts += [f"NOT sent to {name}: {why}" for name, why in self.failed.items()]
        if not self.sent and not self.failed:
            parts.append("no PACS destination known for the original study")
        return "; ".join(parts)


def forward_reidentified(settings: Settings, sessions: sessionmaker[Session], study_dir: Path, pseudo_uid: str, original_uid: str) -> ReturnOutcome:
    """Re-identify every object of the returned study and send it where the original study's results go."""
    from radnode.deid import node_deidentifier, reidentify_file
    from radnode.peers.destinations import CallerIdentity, open_destination

    deid = node_deidentifier(settings, sessions)
    out_dir = settings.work_dir / "returned" / pseudo_uid
    outcome = ReturnOutcome(original_uid)
    for path in sorted(study_dir.rglob("*.dcm")):
        outcome.restored.append(reidentify_file(deid, path, out_dir / path.relative_to(study_dir)))
    caller = CallerIdentity(ae_title=settings.ae_title, delivery=settings.delivery, branding=settings.report, peers=tuple(settings.peers))
    for dest in return_destinations(sessions, original_uid) if outcome.restored else []:
        try:
            report = open_destination(dest, caller).send(outcome.restored)
        except Exception as exc:  # one unreachable PACS must not lose the others; the record says why
            outcome.failed[dest.name] = str(exc)[:300]
            continue
        if report.failed:
            outcome.failed[dest.name] = "; ".join(sorted(set(report.failed.values())))[:300]
        if report.sent:
            outcome.sent[dest.name] = len(report.sent)
    log.info("external result returned", study_uid=original_uid, objects=len(outcome.restored), sent=outcome.sent, failed=list(outcome.failed))
    return outcome
