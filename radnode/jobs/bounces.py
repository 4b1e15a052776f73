"""Bounces that come back after a result mail was accepted: read, recorded on the job.

The SMTP server's acceptance is only the first hop. A downstream server that
cannot deliver sends a delivery status notification (RFC 3464) to the
envelope sender; with ``delivery.smtp.bounce_address`` that is the job's VERP
address, and the mail lands in a mailbox radnode can read
(``delivery.smtp.bounce_mailbox``: a Maildir folder or an mbox file).

:func:`read_bounces` reads every message in such a mailbox with the standard
library (``mailbox``, ``email``), parses the DSNs (:mod:`radnode.peers.dsn`),
finds each one's job and records, per recipient, the Action, Status and
Diagnostic-Code on the job's e-mail destination outcome
(:func:`radnode.store.jobs.record_bounce`) with an audit event. A message is
counted once: each DSN's ``Message-ID`` is kept with the bounce it recorded,
and in a Maildir a handled DSN moves to ``cur/`` with the ``S`` (seen) flag
and is not read again. An mbox is left as it is (the mail system owns it).
Mail that is not a DSN is left untouched.

:class:`BouncePoller` runs :func:`read_bounces` every
``delivery.smtp.bounce_poll_seconds`` in ``radnode serve`` and
``radnode worker``; ``radnode mail bounces`` runs it once.
"""

from __future__ import annotations

import mailbox
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.peers.dsn import DeliveryReport, parse_dsn
from radnode.settings import SmtpSettings
from radnode.store import jobs as jobstore

log = structlog.get_logger(__name__)

MailboxKind = Literal["maildir", "mbox"]

#: Actions recorded on the job; ``delivered``, ``relayed`` and ``expanded`` reports are read and not kept.
RECORDED_ACTIONS = frozenset({"failed", "delayed"})


class BounceMailboxError(OSError):
    """The bounce mailbox cannot be opened."""


@dataclass
class BounceResult:
    """What became of one recipient of one DSN."""

    dsn: str
    recipient: str
    action: str
    status: str
    diagnostic: str
    job_id: str | None = None
    destination: str | None = None
    #: ``recorded``, ``already recorded``, ``not a failure`` or ``unmatched``.
    result: str = "unmatched"
    reason: str = ""


@dataclass
class BounceScan:
    """One reading of a bounce mailbox."""

    mailbox: str
    kind: str
    messages: int = 0
    #: Messages that are not DSNs: left where they are.
    not_dsn: int = 0
    #: DSNs skipped because an earlier reading handled them (Maildir ``S`` flag).
    already_seen: int = 0
    results: list[BounceResult] = field(default_factory=list)

    @property
    def recorded(self) -> int:
        return sum(1 for r in self.results if r.result == "recorded")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recorded": self.recorded}


def mailbox_kind(path: Path) -> MailboxKind:
    """A folder is a Maildir, a file an mbox."""
    if path.is_dir():
        return "maildir"
    if path.is_file():
        return "mbox"
    raise BounceMailboxError(f"bounce mailbox {path} does not exist (expected a Maildir folder or an mbox file)")


def read_bounces(
    sessions: sessionmaker[Session], path: Path, *, kind: MailboxKind | None = None, bounce_address: str | None = None
) -> BounceScan:
    """Read the DSNs in the mailbox at *path* and record them on their jobs."""
    path = Path(path)
    kind = kind or mailbox_kind(path)
    scan = BounceScan(mailbox=str(path), kind=kind)
    try:
        box: mailbox.Mailbox = mailbox.Maildir(path, factory=None, create=False) if kind == "maildir" else mailbox.mbox(path, factory=None, create=False)
        keys = list(box.keys())
    except (OSError, mailbox.Error) as exc:
        raise BounceMailboxError(f"cannot read the bounce mailbox {path} as {kind}: {exc}") from exc
    try:
        for key in keys:
            try:
                if isinstance(box, mailbox.Maildir) and "S" in box.get_message(key).get_flags():
                    scan.already_seen += 1
                    continue
                raw = box.get_bytes(key)
            except (KeyError, OSError):  # taken away meanwhile (another reader, a mail client)
                continue
            scan.messages += 1
            report = parse_dsn(raw)
            if report is None:
                scan.not_dsn += 1
                continue
            scan.results += record_report(sessions, report, bounce_address)
            if isinstance(box, mailbox.Maildir):
                _mark_seen(box, key)
    finally:
        box.close()
    if scan.results:
        log.info("bounce mailbox read", mailbox=str(path), dsns=len({r.dsn for r in scan.results}), recorded=scan.recorded)
    return scan


def _mark_seen(box: mailbox.Maildir, key: str) -> None:
    """Move a handled message to ``cur/`` with the ``S`` flag (the Maildir way of "read")."""
    try:
        msg = box.get_message(key)
        msg.set_subdir("cur")
        msg.add_flag("S")
        box[key] = msg
    except (KeyError, OSError) as exc:  # the DSN id in the job store still keeps it from counting twice
        log.warning("could not mark a bounce as read", key=key, error=str(exc))


def record_report(sessions: sessionmaker[Session], report: DeliveryReport, bounce_address: str | None) -> list[BounceResult]:
    """Record what *report* says about each recipient on its job; one result per recipient."""
    results = [BounceResult(report.dsn_id, r.recipient, r.action, r.status, r.diagnostic) for r in report.recipients]
    reference = report.job_reference(bounce_address)
    if not results:
        return [BounceResult(report.dsn_id, "", "", "", "", reason="the report names no recipient")]
    if reference is None:
        for result in results:
            result.reason = "the report names no radnode job (no VERP address, X-Radnode-Job or radnode Message-ID)"
        log.warning("bounce for no known job", dsn=report.dsn_id)
        return results
    with sessions.begin() as session:
        try:
            row = jobstore.get_job(session, reference.value)
        except jobstore.JobNotFound as exc:
            for result in results:
                result.reason = f"{exc} (found by {reference.via})"
            log.warning("bounce for an unknown job", dsn=report.dsn_id, job=reference.value, via=reference.via)
            return results
        for status, result in zip(report.recipients, results):
            result.job_id = row.job_id
            if status.action not in RECORDED_ACTIONS:
                result.result, result.reason = "not a failure", f"Action: {status.action or 'none'}"
                continue
            bounce = {
                "action": status.action,
                "status": status.status,
                "diagnostic": status.diagnostic,
                "final_recipient": status.final_recipient,
                "reporting_mta": report.reporting_mta,
                "remote_mta": status.remote_mta,
                "dsn": report.dsn_id,
                "at": time.time(),
            }
            name, new = jobstore.record_bounce(session, row.job_id, status.recipient, bounce)
            result.destination = name
            if name is None:
                result.reason = "no e-mail destination of the job sent to this recipient"
                continue
            result.result = "recorded" if new else "already recorded"
            if new:
                verb = "bounced" if status.failed else status.action
                jobstore.record_event(
                    session, "mail", f"email:{verb}", job_id=row.job_id, study_instance_uid=row.study_instance_uid,
                    detail=f"{name}: {status.recipient} {verb}: {status.status} {status.diagnostic}".rstrip()
                    + (f" (reported by {report.reporting_mta})" if report.reporting_mta else "") + f"; DSN {report.dsn_id}",
                    source=report.reporting_mta or None,
                )
                log.info("e-mail bounce recorded", job_id=row.job_id, destination=name, action=status.action, status=status.status)
    return results


class BouncePoller:
    """Reads ``delivery.smtp.bounce_mailbox`` every ``bounce_poll_seconds`` in a daemon thread."""

    def __init__(self, smtp: SmtpSettings, sessions: sessionmaker[Session]) -> None:
        if smtp.bounce_mailbox is None:
            raise ValueError("smtp: bounce_mailbox is not set; there is nothing to poll")
        self.path = Path(smtp.bounce_mailbox)
        self.bounce_address = smtp.bounce_address
        self.interval = smtp.bounce_poll_seconds
        self.sessions = sessions
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> BounceScan | None:
        try:
            return read_bounces(self.sessions, self.path, bounce_address=self.bounce_address)
        except Exception as exc:  # a missing or unreadable mailbox is logged each round, never fatal
            log.warning("reading the bounce mailbox failed", mailbox=str(self.path), error=str(exc))
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="radnode-bounces", daemon=True)
        self._thread.start()
        log.info("reading e-mail bounces", mailbox=str(self.path), every_seconds=self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
