"""DICOM conversations radnode starts: association set-up, the one failure
diagnosis, C-ECHO, C-STORE with per-instance statuses, and the C-FIND that
confirms a destination holds what was sent.

Why one module: opening an association and explaining why it failed used to be
written three times (pull, connectivity page, result sending), worded
differently each time. Here :func:`associate` is the only place an outbound
association is opened, so TCP_NODELAY and TLS are set in one place, and
:func:`diagnose` is the only table that turns a failure into what a human
should check — the pull page, the connectivity check and a failed send read
the same sentence for the same fault.
"""

from __future__ import annotations

import enum
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import structlog
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from radnode.tls import peer_context

log = structlog.get_logger(__name__)

#: C-STORE statuses that mean "stored" (success and the warnings PS3.4 B.2.3 allows).
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class Remote:
    """A DICOM node radnode calls, named as a human will look for it.

    ``label`` opens every diagnosis ("PACS 'main' at 10.0.0.5:104");
    ``address_setting`` and ``ae_setting`` name the settings to fix.
    """

    ae_title: str
    host: str
    port: int
    label: str
    address_setting: str = "peers[].host and port"
    ae_setting: str = "peers[].ae_title"
    kind: str = "PACS"
    #: DICOM TLS (PS3.15 B.1) client context; None: plain TCP. Every
    #: association to this remote (echo, store, find, move, get) uses it.
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_peer(cls, peer: Any) -> "Remote":
        """A configured ``settings.peers`` entry (a PACS to pull from / echo), with its ``tls`` if set."""
        return cls(
            peer.ae_title,
            peer.host,
            int(peer.port),
            f"PACS {peer.name!r} at {peer.host}:{peer.port}",
            tls=peer_context(getattr(peer, "tls", None)),
        )

    @classmethod
    def for_destination(cls, name: str, ae_title: str, host: str, port: int, tls: ssl.SSLContext | None = None) -> "Remote":
        """A routing destination results are sent to."""
        return cls(
            ae_title,
            host,
            int(port),
            f"destination {name!r} at {host}:{port}",
            address_setting=f"the host and port of destination {name!r}",
            ae_setting=f"the ae_title of destination {name!r}",
            kind="destination",
            tls=tls,
        )


class FailureKind(str, enum.Enum):
    """Why a conversation did not happen; each kind has one sentence in :func:`diagnose`."""

    UNRESOLVED = "unresolved"  # the host name does not resolve
    REFUSED = "refused"  # nothing listens (or host unreachable)
    CONNECT_TIMEOUT = "connect-timeout"  # no TCP connection within the timeout
    NO_ANSWER = "no-answer"  # TCP accepted, the A-ASSOCIATE-RQ never answered
    REJECTED = "rejected"  # A-ASSOCIATE-RJ
    ABORTED = "aborted"  # A-ABORT or the connection closed during set-up
    CONTEXT_REFUSED = "context-refused"  # associated, but not for the service needed
    STOPPED_ANSWERING = "stopped-answering"  # no DIMSE response (timeout or abort mid-operation)
    STATUS = "status"  # the peer answered the request with a failure status


class PeerUnavailable(RuntimeError):
    """A conversation with another system failed; ``str()`` says what to check."""

    def __init__(self, message: str, kind: FailureKind, remote: Any = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.remote = remote


#: A-ASSOCIATE-RJ (source, reason) → what it means and what to check (PS3.8 9.3.4).
#: Codes not listed fall back to pynetdicom's own wording of the primitive.
REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given — the {kind} may not know radnode's calling AE title {calling!r}; check its modality list",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title {calling!r} not recognised — add radnode (AE {calling!r}) to the {kind}'s known modalities",
    (1, 7): "called AE title {called!r} not recognised — check {ae_setting}",
    (2, 1): "no reason given (ACSE service provider)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion — try again later",
    (3, 2): "local limit exceeded (too many associations) — try again later",
}


#: Failure kind → the sentence a human reads; ``{reason}`` is the rejection's line above.
MESSAGES: dict[FailureKind, str] = {
    FailureKind.REJECTED: "{label} refused the association ({permanence}): {reason}",
    FailureKind.UNRESOLVED: "could not connect to {label}: the host name {host!r} does not resolve — check {address_setting}",
    FailureKind.REFUSED: (
        "could not connect to {label}: connection refused or host unreachable — is the {kind} running, and are {address_setting} right?"
    ),
    FailureKind.CONNECT_TIMEOUT: (
        "{label} did not accept a TCP connection within {timeout:g} s — is the host reachable (firewall), and are {address_setting} right?"
    ),
    FailureKind.NO_ANSWER: "{label} accepted the connection but did not answer the association request within {timeout:g} s — is it a DICOM port?",
    FailureKind.ABORTED: "{label} aborted the association request — check {ae_setting} and that the {kind} knows radnode's AE title {calling!r}",
    FailureKind.CONTEXT_REFUSED: "{label} does not support {what} (presentation context refused)",
    FailureKind.STOPPED_ANSWERING: "{label} stopped answering the {what} (aborted or timed out after {timeout:g} s)",
}


def diagnose(
    remote: Remote,
    calling_ae: str,
    kind: FailureKind,
    *,
    timeout: float = 0.0,
    rejection: Any = None,
    what: str = "request",
) -> PeerUnavailable:
    """The one table from a failure to the sentence a human reads (pull page,
    connectivity check, a job's send error)."""
    fields = {
        "label": remote.label,
        "host": remote.host,
        "kind": remote.kind,
        "calling": calling_ae,
        "called": remote.ae_title,
        "address_setting": remote.address_setting,
        "ae_setting": remote.ae_setting,
        "timeout": timeout,
        "what": what,
        "permanence": "",
        "reason": "",
    }
    if kind is FailureKind.REJECTED:
        source, reason = int(getattr(rejection, "result_source", 0) or 0), int(getattr(rejection, "diagnostic", 0) or 0)
        text = REJECT_REASONS.get((source, reason)) or f"{_pynetdicom_reason(rejection)} (source {source}, reason {reason})"
        fields["reason"] = text.format(**fields)
        fields["permanence"] = "permanently" if getattr(rejection, "result", None) == 0x01 else "for now"
    return PeerUnavailable(MESSAGES[kind].format(**fields), kind, remote)


def _pynetdicom_reason(primitive: Any) -> str:
    try:
        return str(primitive.reason_str)
    except Exception:  # an unknown code makes pynetdicom's lookup fail
        return "reason not known"


def _failure_kind(remote: Remote, assoc: Association, opened: bool, elapsed: float, timeout: float) -> FailureKind:
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        return FailureKind.REJECTED
    if not opened:
        try:
            socket.getaddrinfo(remote.host, remote.port)
        except socket.gaierror:
            return FailureKind.UNRESOLVED
        return FailureKind.CONNECT_TIMEOUT if elapsed >= timeout * 0.9 else FailureKind.REFUSED
    if assoc.acceptor.primitive is None and elapsed >= timeout * 0.9:
        return FailureKind.NO_ANSWER
    return FailureKind.ABORTED


def application_entity(calling_ae: str, timeout: float) -> AE:
    """An SCU AE with every timeout set, so no call can hang for ever."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


@contextmanager
def associate(
    ae: AE,
    remote: Remote,
    *,
    model: str | None = None,
    what: str = "",
    timeout: float = 30.0,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: list[Any] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Association]:
    """An established association with *remote*, released on exit; else :class:`PeerUnavailable`.

    TCP_NODELAY is set on the socket: pynetdicom never sets it, and without
    it every small PDU to DCMTK-based peers (Orthanc too) waits ~40 ms for a
    delayed ACK. *tls* is the client context for DICOM TLS (PS3.15 B.1),
    passed to pynetdicom as is; without it the remote's own context
    (``Remote.tls``, from ``peers[].tls`` or a destination's ``tls``) is used,
    so pull, result sending and connectivity checks all get TLS here.
    *model*, when given, is the abstract syntax the caller needs: a peer that
    accepts the association but not that context is a failure too.
    """
    tls = tls if tls is not None else remote.tls
    opened: list[bool] = []
    rejections: list[Any] = []

    def _rejected(event: Any) -> None:
        # pynetdicom can report a fast A-ASSOCIATE-RJ as an abort (its requestor
        # checks the socket after the DUL has already closed it): keep the PDU.
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu.to_primitive())

    handlers = [(evt.EVT_CONN_OPEN, lambda _e: opened.append(True)), (evt.EVT_PDU_RECV, _rejected), *(evt_handlers or [])]
    started = time.monotonic()
    try:
        assoc = ae.associate(
            remote.host,
            remote.port,
            ae_title=remote.ae_title,
            ext_neg=list(ext_neg or []) or None,
            evt_handlers=handlers,
            tls_args=(tls, remote.host) if tls is not None else None,
        )
    except socket.gaierror:  # pynetdicom resolves the address before connecting
        raise diagnose(remote, ae.ae_title, FailureKind.UNRESOLVED) from None
    if not assoc.is_established:
        if rejections:
            raise diagnose(remote, ae.ae_title, FailureKind.REJECTED, rejection=rejections[0])
        kind = _failure_kind(remote, assoc, bool(opened), time.monotonic() - started, ae.acse_timeout or timeout)
        raise diagnose(remote, ae.ae_title, kind, timeout=timeout, rejection=assoc.acceptor.primitive)
    sock = assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if model is not None and not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            raise diagnose(remote, ae.ae_title, FailureKind.CONTEXT_REFUSED, what=what or str(model))
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


# -- C-ECHO ---------------------------------------------------------------------


@dataclass(frozen=True)
class EchoResult:
    """One connectivity check: ok, the DIMSE status, the diagnosis, the round trip."""

    ok: bool
    status: int | None
    diagnosis: str
    ms: float
    kind: FailureKind | None = None


def echo(remote: Remote, calling_ae: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> EchoResult:
    """C-ECHO *remote*; a failure carries the same diagnosis a pull or a send would."""
    start = time.monotonic()
    ae = application_entity(calling_ae, timeout)
    ae.add_requested_context(Verification)
    try:
        with associate(ae, remote, model=Verification, what="Verification (C-ECHO)", timeout=timeout, tls=tls) as assoc:
            status = assoc.send_c_echo()
            code = getattr(status, "Status", None)
    except PeerUnavailable as exc:
        return EchoResult(False, None, str(exc), _ms(start), exc.kind)
    if code is None:
        failure = diagnose(remote, calling_ae, FailureKind.STOPPED_ANSWERING, timeout=timeout, what="C-ECHO")
        return EchoResult(False, None, str(failure), _ms(start), failure.kind)
    ok = int(code) == 0
    return EchoResult(ok, int(code), "C-ECHO succeeded" if ok else f"{remote.label} answered C-ECHO with status 0x{int(code):04X}", _ms(start))


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


# -- C-STORE ----------------------------------------------------------------------


@dataclass
class SendReport:
    """Per-instance outcome of one send."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def store_files(remote: Remote, files: Iterable[Path], calling_ae: str = "RADNODE", timeout: float = 30.0, tls: ssl.SSLContext | None = None) -> SendReport:
    """C-STORE each file as stored (no re-encoding) over one association.

    Each instance's status is reported, so a partial failure is never shown
    as a success; a broken association fails the remaining instances with the
    same diagnosis.
    """
    datasets = [(path, dcmread(path)) for path in files]
    ae = application_entity(calling_ae, timeout)
    contexts: dict[str, set[str]] = {}
    for _, ds in datasets:
        contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian}))
    report = SendReport()
    with associate(ae, remote, timeout=timeout, tls=tls) as assoc:
        for _path, ds in datasets:
            uid = str(ds.SOPInstanceUID)
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:  # e.g. no accepted context for this SOP class
                report.failed[uid] = str(exc)
                continue
            code = getattr(status, "Status", None)
            if code is None:
                report.failed[uid] = str(diagnose(remote, calling_ae, FailureKind.STOPPED_ANSWERING, timeout=timeout, what="C-STORE"))
            elif code in STORED_STATUSES:
                report.sent.append(uid)
            else:
                report.failed[uid] = f"status 0x{code:04X}"
    log.info("c-store finished", destination=remote.ae_title, sent=len(report.sent), failed=len(report.failed))
    return report


def c_find(remote: Remote, calling_ae: str, query: Dataset, *, timeout: float = 30.0, tls: ssl.SSLContext | None = None) -> tuple[list[Dataset], int, str]:
    """Study Root C-FIND: every pending identifier, the final status and its ErrorComment.

    A peer that stops answering mid-query is :class:`PeerUnavailable`
    (STOPPED_ANSWERING), never a silently short list.
    """
    model = StudyRootQueryRetrieveInformationModelFind
    ae = application_entity(calling_ae, timeout)
    ae.add_requested_context(model)
    matches: list[Dataset] = []
    final, comment = 0x0000, ""
    with associate(ae, remote, model=model, what="Study Root C-FIND", timeout=timeout, tls=tls) as assoc:
        for status, identifier in assoc.send_c_find(query, model):
            if status is None or "Status" not in status:
                raise diagnose(remote, calling_ae, FailureKind.STOPPED_ANSWERING, timeout=timeout, what="C-FIND")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    matches.append(identifier)
            else:
                final, comment = code, str(status.get("ErrorComment", "") or "")
    return matches, final, comment


def confirm_series(
    remote: Remote,
    study_instance_uid: str,
    series_instance_uids: Iterable[str],
    calling_ae: str = "RADNODE",
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> dict[str, int]:
    """C-FIND (study root, SERIES level) for the series radnode just sent.

    Returns series UID → number of instances the destination reports (0 when
    it does not know the series), so a job can record that PACS really holds
    its results rather than trusting the C-STORE statuses alone.
    """
    found: dict[str, int] = {uid: 0 for uid in series_instance_uids}
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_instance_uid
    query.SeriesInstanceUID = ""
    query.NumberOfSeriesRelatedInstances = ""
    matches, _final, _comment = c_find(remote, calling_ae, query, timeout=timeout, tls=tls)
    for identifier in matches:
        uid = str(identifier.get("SeriesInstanceUID", ""))
        if uid in found:
            try:
                found[uid] = int(identifier.get("NumberOfSeriesRelatedInstances") or 1)
            except (TypeError, ValueError):
                found[uid] = 1
    return found
