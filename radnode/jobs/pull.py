"""Pull a study from PACS by accession number and run one application on it.

Why: a radiologist (CLI, web page, ``POST /api/jobs``) asks for "application
X on accession Y" without sending the study first. radnode finds the study on
a configured PACS peer (C-FIND by AccessionNumber), retrieves it (C-MOVE to
radnode's own AE title, or C-GET for PACSes that cannot connect back), and
when the study completes at the listener the router runs exactly the
requested application with the requested options (trigger ``pull``).

Every step is recorded on a ``PullRequestRow`` (created *before* the PACS is
contacted), so a page can show progress and a failure always carries a
message a human can act on (which AE title, host or port to check). The
accession number is patient data: it is stored on the row (the requester
sees it) but never put in log events above debug level.

The functions here are synchronous; :class:`PullRunner` runs them in
background threads for callers that must answer at once (the web app).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import structlog
from pynetdicom.events import Event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.peers.dicom import PeerUnavailable, Remote
from radnode.peers.dicom_query import RetrieveOutcome, find_studies
from radnode.peers.dicom_query import retrieve_study as retrieve_study_from
from radnode.settings import DicomPeer, Settings
from radnode.store.jobs import JobRow
from radnode.store.pulls import PullRequestRow

log = structlog.get_logger(__name__)

#: States in which nobody has given up on the pull yet.
ACTIVE_STATES = ("finding", "retrieving")

#: DICOM SH without wildcards or backslash: what an accession number really
#: looks like (letters, digits and a few separators; no edge spaces).
_ACCESSION_RE = re.compile(r"^[A-Za-z0-9._/:#+-]([A-Za-z0-9 ._/:#+-]{0,14}[A-Za-z0-9._/:#+-])?$")

#: Final C-MOVE/C-GET statuses that deserve a specific hint (PS3.4 C.4.2.1.5).
_RETRIEVE_STATUS_HINTS: dict[int, str] = {
    0xA701: "out of resources: unable to calculate number of matches",
    0xA702: "out of resources: unable to perform sub-operations",
    0xA801: "move destination {dest!r} unknown — add radnode (AE {dest!r}, this host, DICOM port {port}) to the PACS's modalities",
    0xA900: "identifier does not match SOP class",
    0xFE00: "cancelled",
}


class PullError(ValueError):
    """A pull that cannot be accepted: unknown application, bad accession or options, unknown PACS."""


# -- validation and the record --------------------------------------------------


def validate_accession(accession: str) -> str:
    """An accession is DICOM SH (1–16 characters) and never a query pattern."""
    value = (accession or "").strip()
    if not value:
        raise PullError("the accession number is empty")
    if len(value) > 16:
        raise PullError("an accession number has at most 16 characters (DICOM SH)")
    if any(c in value for c in "*?\\"):
        raise PullError("an accession number may not contain wildcards (*, ?) or backslashes")
    if not _ACCESSION_RE.match(value):
        raise PullError("an accession number may only contain letters, digits, spaces inside and . _ / : # + -")
    return value


def resolve_peer(settings: Settings, pacs: str | None) -> DicomPeer:
    """The named peer, or the first one: the PACS most sites have exactly one of."""
    if not settings.peers:
        raise PullError("no PACS configured: add one to peers[] in the settings")
    if pacs is None:
        return settings.peers[0]
    for peer in settings.peers:
        if peer.name == pacs:
            return peer
    raise PullError(f"unknown PACS {pacs!r} (configured peers: {', '.join(p.name for p in settings.peers)})")


def validate_application(settings: Settings, application: str, options: Mapping[str, Any], registry: Any = None) -> None:
    """The application must be one routing could name; installed ones also check the options.

    Checking the options here (not only in the worker) lets a typo fail the
    request at once instead of after minutes of retrieving.
    """
    from radnode.analyzers.registry import OptionsError, Registry

    reg = registry if registry is not None else Registry.from_settings(settings)
    declared = reg.declared_applications()
    if application not in declared:
        raise PullError(f"unknown application {application!r} (known: {', '.join(sorted(declared)) or 'none'})")
    try:
        reg.check_options(application, options)
    except OptionsError as exc:
        raise PullError(str(exc)) from None


def request_pull(
    settings: Settings,
    sessions: sessionmaker[Session],
    accession: str,
    application: str,
    options: Mapping[str, Any] | None = None,
    pacs: str | None = None,
    requested_by: str = "cli",
    *,
    registry: Any = None,
) -> PullRequestRow:
    """Validate a pull and record it (state ``finding``) before any PACS is contacted.

    Raises :class:`PullError` for a request that cannot be accepted; nothing
    is recorded then. Run it with :func:`run_pull` or :class:`PullRunner`.
    """
    accession = validate_accession(accession)
    peer = resolve_peer(settings, pacs)
    opts = dict(options or {})
    validate_application(settings, application, opts, registry)
    try:
        options_json = json.dumps(opts, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise PullError(f"options must be plain JSON values: {exc}") from None
    now = time.time()
    with sessions.begin() as session:
        row = PullRequestRow(
            accession=accession,
            application=application,
            options_json=options_json,
            pacs=peer.name,
            requested_by=requested_by[:64],
            study_instance_uid=None,
            state="finding",
            message=f"finding accession {accession} on PACS {peer.name!r}",
            instances_expected=None,
            instances_received=0,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
    log.info("pull requested", pull_id=row.id, pacs=peer.name, application=application, requested_by=requested_by)
    return row


def get_pull(sessions: sessionmaker[Session], pull_id: int) -> PullRequestRow:
    with sessions() as session:
        row = session.get(PullRequestRow, pull_id)
    if row is None:
        raise LookupError(f"no pull request #{pull_id}")
    return row


def list_pulls(sessions: sessionmaker[Session], limit: int = 50) -> list[PullRequestRow]:
    """Most recent first (for the web page)."""
    with sessions() as session:
        return list(session.scalars(select(PullRequestRow).order_by(PullRequestRow.id.desc()).limit(limit)))


def _update(sessions: sessionmaker[Session], pull_id: int, **values: Any) -> PullRequestRow:
    with sessions.begin() as session:
        row = session.get(PullRequestRow, pull_id)
        if row is None:
            raise LookupError(f"no pull request #{pull_id}")
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = time.time()
    return row


# -- talking to the PACS (the conversation itself is radnode.peers) ------------


class _PushedEvent:
    """A C-STORE that arrived on radnode's own C-GET association, presented to
    ``handle_store`` as if the PACS had pushed it to radnode's AE title.

    So the spool's file meta and the index show exactly what a C-MOVE arrival
    shows (calling AE = the PACS, called AE = radnode), and routing,
    quiet periods and a rebuild from the spool treat both paths alike.
    """

    def __init__(self, event: Event, calling_ae: str, called_ae: str) -> None:
        self.request = event.request
        self.file_meta = event.file_meta
        self.context = event.context  # handle_store reads the transfer syntax from it
        self.assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title=calling_ae, primitive=SimpleNamespace(called_ae_title=called_ae)))


def _store_pushed(event: Event, spool: Any, sink: Any, quiet_seconds_for: Callable[[str], float], calling_ae: str, called_ae: str) -> int:
    from radnode.listener.handlers import handle_store

    return handle_store(_PushedEvent(event, calling_ae, called_ae), spool, sink, quiet_seconds_for)  # type: ignore[arg-type]


def _get_handler(settings: Settings, sessions: sessionmaker[Session], peer: DicomPeer) -> tuple[Callable[[Event], int], Any, Any]:
    """The C-STORE handler for a C-GET: the listener's own spool and index writer (and the spool, to close).

    Its instances go through the listener's ``handle_store``, so a running
    listener's assembler completes the study exactly like a pushed one.
    """
    from radnode.listener.index_writer import IndexWriter
    from radnode.listener.service import open_spool

    spool = open_spool(settings, journal=False)  # per-file fsyncs: a retrieve takes no journal slot
    writer = IndexWriter(sessions)

    def handler(event: Event) -> int:
        return _store_pushed(event, spool, writer, settings.quiet_seconds_for, peer.ae_title, settings.ae_title)

    return handler, writer, spool


def retrieve_study(
    settings: Settings,
    peer: DicomPeer,
    study_uid: str,
    on_progress: Callable[[RetrieveOutcome], None] = lambda _o: None,
    timeout: float = 60.0,
    sessions: sessionmaker[Session] | None = None,
) -> RetrieveOutcome:
    """C-MOVE the study to radnode's AE title, or C-GET it into the spool (``peer.retrieve``).

    The C-GET path needs *sessions* for the index.
    """
    handler, writer, spool = None, None, None
    if peer.retrieve == "get":
        if sessions is None:
            raise ValueError("C-GET needs the index sessions")
        handler, writer, spool = _get_handler(settings, sessions, peer)
    try:
        return retrieve_study_from(Remote.for_peer(peer), settings.ae_title, study_uid, method=peer.retrieve,
                                   on_progress=on_progress, timeout=timeout, store_handler=handler)
    finally:
        if spool is not None:
            spool.close()
        if writer is not None:
            writer.flush()
            writer.close()


# -- the pull itself ------------------------------------------------------------


def run_pull(
    settings: Settings,
    sessions: sessionmaker[Session],
    pull_id: int,
    *,
    progress: Callable[[PullRequestRow], None] = lambda _r: None,
    timeout: float = 30.0,
) -> PullRequestRow:
    """Find and retrieve the study of a recorded pull; return the row in its final state here.

    Ends in ``received`` (the study is on its way through the listener; the
    router moves the pull to ``routed``) or ``failed`` with the reason.
    *progress* is called with the row after every recorded change.
    """
    row = get_pull(sessions, pull_id)
    if row.state != "finding":
        raise PullError(f"pull #{pull_id} is {row.state}, it can only be run while finding")
    try:
        return _run(settings, sessions, row, progress, timeout)
    except Exception as exc:  # never leave a pull hanging in finding/retrieving
        log.exception("pull failed unexpectedly", pull_id=pull_id)
        failed = _update(sessions, pull_id, state="failed", message=f"internal error: {type(exc).__name__}: {exc}")
        progress(failed)
        return failed


def _run(settings: Settings, sessions: sessionmaker[Session], row: PullRequestRow, progress: Callable[[PullRequestRow], None], timeout: float) -> PullRequestRow:
    pull_id = row.id

    def fail(message: str) -> PullRequestRow:
        log.warning("pull failed", pull_id=pull_id, pacs=row.pacs)  # the reason may name the accession: it is on the row
        failed = _update(sessions, pull_id, state="failed", message=message)
        progress(failed)
        return failed

    peer = next((p for p in settings.peers if p.name == row.pacs), None)
    if peer is None:
        return fail(f"PACS {row.pacs!r} is no longer configured in peers[]")
    try:
        found = find_studies(Remote.for_peer(peer), settings.ae_title, row.accession, timeout)
    except PeerUnavailable as exc:
        return fail(str(exc))
    if not found:
        return fail(f"no study with accession {row.accession} on PACS {peer.name!r} ({peer.ae_title}@{peer.host}:{peer.port})")
    if len(found) > 1:
        listed = "; ".join(s.describe() for s in sorted(found, key=lambda s: (s.study_date, s.study_instance_uid)))
        return fail(f"accession {row.accession} matches {len(found)} studies on PACS {peer.name!r}: {listed}")
    study = found[0]
    how = "C-GET" if peer.retrieve == "get" else f"C-MOVE to {settings.ae_title}"
    current = _update(
        sessions,
        pull_id,
        study_instance_uid=study.study_instance_uid,
        instances_expected=study.instances,
        state="retrieving",
        message=f"retrieving {study.instances if study.instances is not None else 'all'} instances by {how}",
    )
    log.info("pull retrieving", pull_id=pull_id, pacs=peer.name, study_uid=study.study_instance_uid, instances=study.instances, method=peer.retrieve)
    progress(current)

    last = [0.0]

    def on_progress(outcome: RetrieveOutcome) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and outcome.remaining not in (0, None):
            return  # a pending response per instance: record a few per second
        last[0] = now
        total = outcome.received + outcome.failed + (outcome.remaining or 0)
        expected = total if total else study.instances
        progress(_update(
            sessions, pull_id,
            instances_received=outcome.received,
            instances_expected=expected,
            message=f"retrieving: {outcome.received} of {expected if expected is not None else '?'} instances"
            + (f", {outcome.failed} failed" if outcome.failed else ""),
        ))

    try:
        outcome = retrieve_study(settings, peer, study.study_instance_uid, on_progress, timeout=max(timeout, 60.0), sessions=sessions)
    except PeerUnavailable as exc:
        return fail(str(exc))
    counts = f"{outcome.received} received, {outcome.failed} failed, {outcome.warning} with warnings"
    if outcome.status == 0x0000 and not outcome.failed and not outcome.warning:
        done = _update(sessions, pull_id, state="received", instances_received=outcome.received, message=f"retrieved {outcome.received} instances")
        log.info("pull retrieved", pull_id=pull_id, study_uid=study.study_instance_uid, instances=outcome.received)
        progress(done)
        return done
    _update(sessions, pull_id, instances_received=outcome.received)
    if outcome.status is None:
        return fail(f"{outcome.comment} ({counts})")
    hint = _RETRIEVE_STATUS_HINTS.get(outcome.status, "")
    if outcome.status in (0x0000, 0xB000):  # finished, but not every instance arrived
        hint = "some instances were not delivered"
        if peer.retrieve == "move":
            hint += " — does the PACS reach radnode's listener (AE {dest!r}, DICOM port {port}), and does radnode accept its AE title?"
    elif peer.retrieve == "move" and 0xC000 <= outcome.status <= 0xCFFF and not outcome.received:
        # What most PACSes (Orthanc too) answer for a move destination they do not know.
        hint = "unable to process — does the PACS know radnode as a modality (AE {dest!r}, this host, DICOM port {port})?"
    hint = hint.format(dest=settings.ae_title, port=settings.port)
    detail = f": {hint}" if hint else ""
    comment = f" ({outcome.comment})" if outcome.comment else ""
    return fail(f"{how} from {Remote.for_peer(peer).label} ended with status 0x{outcome.status:04X}{detail}{comment} ({counts})")


def start_pull(
    settings: Settings,
    sessions: sessionmaker[Session],
    pull_id: int,
    *,
    progress: Callable[[PullRequestRow], None] = lambda _r: None,
    timeout: float = 30.0,
) -> threading.Thread:
    """Run a recorded pull (:func:`run_pull`) in a daemon thread and return the thread.

    For a request handler that must answer at once: ``row = request_pull(...)``
    then ``start_pull(settings, sessions, row.id)``; the page polls :func:`get_pull`.
    """
    thread = threading.Thread(
        target=run_pull,
        args=(settings, sessions, pull_id),
        kwargs={"progress": progress, "timeout": timeout},
        name=f"radnode-pull-{pull_id}",
        daemon=True,
    )
    thread.start()
    return thread


class PullRunner:
    """Runs pulls in background threads, for callers that must answer at once.

    The web app creates one at start: ``runner.request(...)`` records the pull
    and returns the row immediately; the page polls :func:`get_pull`.
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.sessions = sessions
        self.timeout = timeout
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def request(
        self,
        accession: str,
        application: str,
        options: Mapping[str, Any] | None = None,
        pacs: str | None = None,
        requested_by: str = "web",
    ) -> PullRequestRow:
        """Validate and record (raises PullError), then retrieve in the background."""
        row = request_pull(self.settings, self.sessions, accession, application, options, pacs, requested_by)
        self.submit(row.id)
        return row

    def submit(self, pull_id: int, progress: Callable[[PullRequestRow], None] = lambda _r: None) -> threading.Thread:
        thread = start_pull(self.settings, self.sessions, pull_id, progress=progress, timeout=self.timeout)
        with self._lock:
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}
            self._threads[pull_id] = thread
        return thread

    def running(self) -> list[int]:
        with self._lock:
            return [k for k, t in self._threads.items() if t.is_alive()]

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the running pulls; True when none is left."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(None if end is None else max(end - time.monotonic(), 0))
        return not any(t.is_alive() for t in threads)


# -- what a pull became ---------------------------------------------------------


def pull_job(sessions: sessionmaker[Session], row: PullRequestRow) -> Any:
    """The job a routed pull became (the latest of its study and application), or None."""
    if row.study_instance_uid is None:
        return None
    with sessions() as session:
        return session.scalars(
            select(JobRow)
            .where(JobRow.study_instance_uid == row.study_instance_uid, JobRow.application == row.application)
            .order_by(JobRow.updated_at.desc())
            .limit(1)
        ).first()
