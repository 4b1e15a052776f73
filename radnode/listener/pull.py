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
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import structlog
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.routing.rules import (
    DicomNode,
    PlannedApplication,
    default_destinations,
    RoutingConfig,
)
from radnode.settings import DicomPeer, Settings
from radnode.store.pulls import PullRequestRow

log = structlog.get_logger(__name__)

#: States in which a completed study is routed as this pull (the C-MOVE's
#: final response can come after the listener has seen the last instance).
ROUTABLE_STATES = ("retrieving", "received")
#: States in which nobody has given up on the pull yet.
ACTIVE_STATES = ("finding", "retrieving")

#: DICOM SH without wildcards or backslash: what an accession number really
#: looks like (letters, digits and a few separators; no edge spaces).
_ACCESSION_RE = re.compile(r"^[A-Za-z0-9._/:#+-]([A-Za-z0-9 ._/:#+-]{0,14}[A-Za-z0-9._/:#+-])?$")

#: A-ASSOCIATE-RJ (source, reason) → what it means and what to check (PS3.8 9.3.4).
_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given — the PACS may not know radnode's calling AE title {calling!r}; check its modality list",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title {calling!r} not recognised — add radnode (AE {calling!r}) to the PACS's known modalities",
    (1, 7): "called AE title {called!r} not recognised — check peers[].ae_title",
    (2, 1): "no reason given (ACSE service provider)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion — try again later",
    (3, 2): "local limit exceeded (too many associations) — try again later",
}

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


class PacsUnavailable(RuntimeError):
    """The PACS could not be talked to; the message says what to check."""


@dataclass(frozen=True)
class FoundStudy:
    """One C-FIND match (no patient identity: only what a requester needs to choose)."""

    study_instance_uid: str
    instances: int | None
    study_date: str
    study_description: str
    modalities: str

    def describe(self) -> str:
        desc = f"{self.study_date or 'no date'} {self.study_description or '(no description)'!r}"
        if self.modalities:
            desc += f" {self.modalities}"
        if self.instances is not None:
            desc += f", {self.instances} instances"
        return f"{desc} [{self.study_instance_uid}]"


@dataclass
class RetrieveOutcome:
    """Counts and final status of one C-MOVE or C-GET."""

    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    comment: str = ""

    @property
    def received(self) -> int:
        return self.completed + self.warning


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
    from radnode.analyzers.registry import Registry, RegistryError

    reg = registry if registry is not None else Registry.from_settings(settings)
    known = reg.known_applications()
    if application not in known:
        raise PullError(f"unknown application {application!r} (known: {', '.join(sorted(known)) or 'none'})")
    try:
        spec = reg.get(application).spec  # analyzers may set spec per instance (the model found)
    except RegistryError:
        return  # a planned built-in without an analyzer: the job records that, as routing does
    try:
        spec.options.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors())
        raise PullError(f"invalid options for {application}: {problems}") from None


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


# -- talking to the PACS ------------------------------------------------------


def _peer_label(peer: DicomPeer) -> str:
    return f"PACS {peer.name!r} at {peer.host}:{peer.port}"


@contextmanager
def _association(
    settings: Settings,
    peer: DicomPeer,
    ae: AE,
    model: str,
    what: str,
    timeout: float,
    *,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: list[Any] | None = None,
) -> Iterator[Association]:
    """An established association for *model*, or PacsUnavailable with a diagnosis."""
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    opened: list[bool] = []
    handlers = [(evt.EVT_CONN_OPEN, lambda _e: opened.append(True)), *(evt_handlers or [])]
    started = time.monotonic()
    from radnode.tls import peer_tls_args  # issue 14: per-peer DICOM TLS

    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, ext_neg=list(ext_neg or []) or None, evt_handlers=handlers, tls_args=peer_tls_args(peer, peer.host))
    if not assoc.is_established:
        raise PacsUnavailable(_diagnose(settings, peer, assoc, bool(opened), time.monotonic() - started, timeout))
    sock = assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            raise PacsUnavailable(f"{_peer_label(peer)} does not support {what} (presentation context refused)")
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _diagnose(settings: Settings, peer: DicomPeer, assoc: Association, opened: bool, elapsed: float, timeout: float) -> str:
    """Turn a failed association into what a human should check."""
    label = _peer_label(peer)
    rsp = assoc.acceptor.primitive
    if assoc.is_rejected and rsp is not None:
        source, reason = int(rsp.result_source or 0), int(rsp.diagnostic or 0)
        text = _REJECT_REASONS.get((source, reason), f"reason {reason} from source {source}")
        kind = "permanently" if rsp.result == 0x01 else "for now"
        return f"{label} refused the association ({kind}): " + text.format(calling=settings.ae_title, called=peer.ae_title)
    if not opened:
        if elapsed >= timeout * 0.9:
            return f"{label} did not accept a TCP connection within {timeout:g} s — is the host reachable (firewall), and are peers[].host and port right?"
        return f"could not connect to {label}: connection refused or host unreachable — is the PACS running, and are peers[].host and port right?"
    if rsp is None and elapsed >= timeout * 0.9:
        return f"{label} accepted the connection but did not answer the association request within {timeout:g} s — is it a DICOM port?"
    return f"{label} aborted the association request — check peers[].ae_title and that the PACS knows radnode's AE title {settings.ae_title!r}"


def find_studies(settings: Settings, peer: DicomPeer, accession: str, timeout: float = 30.0) -> list[FoundStudy]:
    """C-FIND (Study Root, STUDY level) by AccessionNumber; one entry per study UID."""
    ae = AE(ae_title=settings.ae_title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.AccessionNumber = accession
    query.StudyInstanceUID = ""
    query.NumberOfStudyRelatedInstances = ""
    query.StudyDate = ""
    query.StudyDescription = ""
    query.ModalitiesInStudy = ""
    found: dict[str, FoundStudy] = {}
    with _association(settings, peer, ae, StudyRootQueryRetrieveInformationModelFind, "Study Root C-FIND", timeout) as assoc:
        final = None
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status is None or "Status" not in status:
                raise PacsUnavailable(f"{_peer_label(peer)} stopped answering the C-FIND (aborted or timed out after {timeout:g} s)")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if identifier is None:
                    continue
                uid = str(identifier.get("StudyInstanceUID", "") or "").strip()
                got = str(identifier.get("AccessionNumber", accession) or accession).strip()
                if not uid or got != accession:  # a PACS that matched loosely
                    continue
                raw = identifier.get("NumberOfStudyRelatedInstances")
                try:
                    count = int(raw) if raw not in (None, "") else None
                except (TypeError, ValueError):
                    count = None
                mods = identifier.get("ModalitiesInStudy", "") or ""
                found[uid] = FoundStudy(
                    study_instance_uid=uid,
                    instances=count,
                    study_date=str(identifier.get("StudyDate", "") or ""),
                    study_description=str(identifier.get("StudyDescription", "") or ""),
                    modalities=mods if isinstance(mods, str) else "\\".join(str(m) for m in mods),
                )
            else:
                final = code
        if final not in (None, 0x0000):
            comment = str(status.get("ErrorComment", "") or "") if status is not None else ""
            raise PacsUnavailable(f"{_peer_label(peer)} refused the C-FIND: status 0x{final:04X}{' (' + comment + ')' if comment else ''}")
    return list(found.values())


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
        self.assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title=calling_ae, primitive=SimpleNamespace(called_ae_title=called_ae)))


def _store_pushed(event: Event, spool: Any, sink: Any, quiet_seconds_for: Callable[[str], float], calling_ae: str, called_ae: str) -> int:
    from radnode.listener.handlers import handle_store

    return handle_store(_PushedEvent(event, calling_ae, called_ae), spool, sink, quiet_seconds_for)  # type: ignore[arg-type]


def retrieve_study(
    settings: Settings,
    peer: DicomPeer,
    study_uid: str,
    on_progress: Callable[[RetrieveOutcome], None] = lambda _o: None,
    timeout: float = 60.0,
    sessions: sessionmaker[Session] | None = None,
) -> RetrieveOutcome:
    """C-MOVE the study to radnode's AE title, or C-GET it into the spool (``peer.retrieve``).

    The C-GET path needs *sessions* for the index; its instances go through
    the listener's own ``handle_store`` (spool + index writer), so a running
    listener's assembler completes the study exactly like a pushed one.
    """
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    outcome = RetrieveOutcome()
    ae = AE(ae_title=settings.ae_title)
    writer = None
    if peer.retrieve == "get":
        if sessions is None:
            raise ValueError("C-GET needs the index sessions")
        from radnode.listener.index_writer import IndexWriter
        from radnode.listener.spool import Spool

        model, what = StudyRootQueryRetrieveInformationModelGet, "Study Root C-GET"
        ae.add_requested_context(model)
        roles = []
        for cx in StoragePresentationContexts[: 127]:
            ae.add_requested_context(cx.abstract_syntax)
            roles.append(build_role(cx.abstract_syntax, scp_role=True))
        spool = Spool(settings.spool_dir, fsync=settings.listener.fsync)
        writer = IndexWriter(sessions)
        handlers = [(evt.EVT_C_STORE, _store_pushed, [spool, writer, settings.quiet_seconds_for, peer.ae_title, settings.ae_title])]
        ctx = _association(settings, peer, ae, model, what, timeout, ext_neg=roles, evt_handlers=handlers)
    else:
        model, what = StudyRootQueryRetrieveInformationModelMove, "Study Root C-MOVE"
        ae.add_requested_context(model)
        ctx = _association(settings, peer, ae, model, what, timeout)
    try:
        with ctx as assoc:
            if peer.retrieve == "get":
                responses = assoc.send_c_get(identifier, model)
            else:
                responses = assoc.send_c_move(identifier, settings.ae_title, model)
            for status, _ident in responses:
                if status is None or "Status" not in status:
                    outcome.status = None
                    outcome.comment = f"the PACS stopped answering (association aborted or no response within {timeout:g} s)"
                    break
                outcome.status = int(status.Status)
                outcome.completed = int(status.get("NumberOfCompletedSuboperations", outcome.completed) or 0)
                outcome.failed = int(status.get("NumberOfFailedSuboperations", outcome.failed) or 0)
                outcome.warning = int(status.get("NumberOfWarningSuboperations", outcome.warning) or 0)
                remaining = status.get("NumberOfRemainingSuboperations")
                outcome.remaining = int(remaining) if remaining not in (None, "") else None
                outcome.comment = str(status.get("ErrorComment", "") or "")
                on_progress(outcome)
    finally:
        if writer is not None:
            writer.flush()
            writer.close()
    return outcome


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
        found = find_studies(settings, peer, row.accession, timeout)
    except PacsUnavailable as exc:
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
    except PacsUnavailable as exc:
        return fail(str(exc))
    counts = f"{outcome.received} received, {outcome.failed} failed, {outcome.warning} with warnings"
    if outcome.status == 0x0000 and not outcome.failed and not outcome.warning:
        done = _update(sessions, pull_id, state="received", instances_received=outcome.received, message=f"retrieved {outcome.received} instances")
        log.info("pull retrieved", pull_id=pull_id, study_uid=study.study_instance_uid, instances=outcome.received)
        progress(done)
        return done
    _update(sessions, pull_id, instances_received=outcome.received)
    if outcome.status is None:
        return fail(f"retrieve from {_peer_label(peer)} broke off: {outcome.comment} ({counts})")
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
    return fail(f"{how} from {_peer_label(peer)} ended with status 0x{outcome.status:04X}{detail}{comment} ({counts})")


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


# -- routing a pulled study -----------------------------------------------------


@dataclass(frozen=True)
class PullRouting:
    """What the router needs to route a pulled study: exactly this application
    and options, results back to the PACS it came from."""

    pull_id: int
    application: str
    options: Mapping[str, Any]
    sender: DicomNode | None

    def planned(self, config: RoutingConfig) -> PlannedApplication:
        """The one application of the pull, with the rules' default destinations
        (``return_to_sender`` = the PACS pulled from)."""
        return PlannedApplication(
            name=self.application,
            options=dict(self.options),
            destinations=default_destinations(config, self.sender),
            rules=(f"pull #{self.pull_id}",),
        )


def pull_for_study(settings: Settings, sessions: sessionmaker[Session], study_uid: str) -> PullRouting | None:
    """The most recent pull of *study_uid*, if it is still waiting for its study."""
    with sessions() as session:
        row = session.scalars(
            select(PullRequestRow).where(PullRequestRow.study_instance_uid == study_uid).order_by(PullRequestRow.id.desc()).limit(1)
        ).first()
    if row is None or row.state not in ROUTABLE_STATES:
        return None
    peer = next((p for p in settings.peers if p.name == row.pacs), None)
    sender = DicomNode(ae_title=peer.ae_title, host=peer.host, port=peer.port) if peer is not None else None
    return PullRouting(pull_id=row.id, application=row.application, options=json.loads(row.options_json or "{}"), sender=sender)


def mark_routed(session: Session, pull_id: int, jobs: Sequence[tuple[str, str]]) -> None:
    """In the router's transaction: the pull became these (job id, state)."""
    row = session.get(PullRequestRow, pull_id)
    if row is None:
        return
    row.state = "routed"
    row.message = "routed: " + (", ".join(f"job {job_id} ({state})" for job_id, state in jobs) or "no job")
    row.updated_at = time.time()


def pull_job(sessions: sessionmaker[Session], row: PullRequestRow) -> Any:
    """The job a routed pull became (the latest of its study and application), or None."""
    from radnode.jobs.store import JobRow

    if row.study_instance_uid is None:
        return None
    with sessions() as session:
        return session.scalars(
            select(JobRow)
            .where(JobRow.study_instance_uid == row.study_instance_uid, JobRow.application == row.application)
            .order_by(JobRow.updated_at.desc())
            .limit(1)
        ).first()
