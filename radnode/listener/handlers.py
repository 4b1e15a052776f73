"""pynetdicom event handlers: small functions bound to the AE with their
dependencies as arguments (no global state).

``handle_store`` does one thing: put the instance durably in the spool, hand
a record to the index writer, and answer. No routing or inference runs inside
an association thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
import uuid
from dataclasses import dataclass
from io import BytesIO
from collections.abc import Iterable
from typing import Any, Callable, Protocol

import structlog
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.events import Event

from radnode.listener.filemeta import PREAMBLE, encode_file_meta
from radnode.listener.header import WANTED, read_header

from radnode.listener.rawdata import (
    InflatedTooLarge,
    MalformedDataSet,
    NestingTooDeep,
    check_nesting,
    inflate_bounded,
    strip_meta_groups,
)
from radnode.listener.spool import DuplicateInstanceError, Spool, UnsafeUIDError
from radnode.listener.status import DUPLICATE_ELSEWHERE, EchoStatus, StoreStatus
from radnode.listener.transport import GuardedSocket
from radnode.store.studies import InstanceRecord
from radnode.uids import is_valid_uid

log = structlog.get_logger(__name__)

#: The header elements the index needs (pydicom's fallback reads the same ones as listener/header.py).
_HEADER_TAGS = [keyword for keyword, _ in WANTED.values()]
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class RecordSink(Protocol):
    def submit(self, record: InstanceRecord) -> None: ...

    def released(self, study_instance_uids: Iterable[str], at: float | None = None) -> None: ...


@dataclass(frozen=True)
class PeerPolicy:
    """Who may associate, and which called AE titles radnode answers to."""

    called_aes: frozenset[str]
    allowed_calling_aes: frozenset[str] | None = None
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None

    def host_allowed(self, host: str) -> bool:
        if self.allowed_networks is None:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.allowed_networks)


def handle_conn_open(event: Event) -> None:
    """Turn Nagle off: without it each small PDU waits ~40 ms for an ACK.

    (The DUL's idle poll is gone altogether: listener/reactor.py.)
    """
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        try:
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def handle_requested(event: Event, policy: PeerPolicy, audit: Any = None) -> None:
    """Reject an A-ASSOCIATE-RQ from a peer that is not allowed (PS3.8 9.3.4)."""
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = str(primitive.calling_ae_title).strip()  # type: ignore[union-attr]
    called = str(primitive.called_ae_title).strip()  # type: ignore[union-attr]
    host = assoc.requestor.address
    if not policy.host_allowed(host):
        reason, diagnostic = "source address not allowed", 0x01
    elif policy.allowed_calling_aes is not None and calling not in policy.allowed_calling_aes:
        reason, diagnostic = "calling AE title not allowed", 0x03
    elif called not in policy.called_aes:
        reason, diagnostic = "called AE title unknown", 0x07
    else:
        return
    log.warning("association rejected", reason=reason, calling_ae=calling, called_ae=called, host=host)
    _audit(audit, calling or "?", "dicom:rejected", f"{reason} (called {called})", host)
    # Rejected-permanent by the service user; kill() lets the DUL flush the
    # A-ASSOCIATE-RJ before the socket closes (as pynetdicom's own checks do).
    assoc.acse.send_reject(0x01, 0x01, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


#: Stands in for an unusable SOP Instance UID so that pynetdicom can route the
#: request to ``handle_store``, which then answers the recorded status.
PLACEHOLDER_UID = "2.25.0"
_VERDICTS = "radnode_verdicts"


def handle_dimse_recv(event: Event) -> None:
    """Make sure a malformed C-STORE request still gets an answer.

    pynetdicom drops a C-STORE whose command carries an empty SOP Instance
    UID (no answer: the sender waits for its timeout), aborts on one over 64
    characters, and has no service for a SOP class that is not the
    presentation context's. Here such a command is given usable values and
    the status radnode will answer is recorded for ``handle_store``.
    """
    message = event.message  # type: ignore[attr-defined]
    command = message.command_set
    if command is None or command.get("CommandField") != 0x0001:
        return
    message_id = command.get("MessageID")
    sop_uid = str(command.get("AffectedSOPInstanceUID", "") or "")
    sop_class = str(command.get("AffectedSOPClassUID", "") or "")
    cx = event.assoc._accepted_cx.get(int(message.context_id or 0))
    verdict: tuple[StoreStatus, str] | None = None
    if not is_valid_uid(sop_uid) or not is_valid_uid(sop_class):
        verdict = (StoreStatus.INVALID_UID, "invalid SOP instance/class UID in the command")
    elif cx is not None and sop_class != cx.abstract_syntax:
        verdict = (StoreStatus.SOP_CLASS_NOT_SUPPORTED, "command SOP class differs from the presentation context's")
    if verdict is None or cx is None or message_id is None:
        return
    log.warning(
        "c-store command malformed",
        reason=verdict[1],
        sop_uid=_short(sop_uid),
        sop_class=_short(sop_class),
        calling_ae=str(event.assoc.requestor.ae_title).strip(),
    )
    event.assoc.__dict__.setdefault(_VERDICTS, {})[int(message_id)] = verdict
    command.AffectedSOPInstanceUID = PLACEHOLDER_UID
    command.AffectedSOPClassUID = cx.abstract_syntax


def _audit(audit: Any, actor: str, action: str, detail: str, source: str | None, study: str | None = None) -> None:
    if audit is not None:
        from radnode.audit import AuditEntry

        audit.submit(AuditEntry(actor=_short(actor, 64), action=action, detail=_short(detail, 500), source=source, study_instance_uid=study))


def handle_accepted(event: Event, audit: Any) -> None:
    """Audit: an association was accepted (who, to which AE title, from where)."""
    assoc = event.assoc
    called = str(assoc.requestor.primitive.called_ae_title).strip()  # type: ignore[union-attr]
    _audit(audit, str(assoc.requestor.ae_title).strip(), "dicom:accepted", f"called {called}", str(assoc.requestor.address))


def handle_ended(event: Event, audit: Any) -> None:
    """Audit: the studies an association delivered, once, when it ends (not per instance)."""
    assoc = event.assoc
    received: dict[str, int] = assoc.__dict__.get(_RECEIVED, {})  # read, not taken: the release signal reads it too
    calling, host = str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address)
    for study, count in received.items():
        _audit(audit, calling, "dicom:received", f"{count} instance(s)", host, study)


_RECEIVED = "radnode_received"


def handle_echo(event: Event) -> int:
    log.debug("c-echo", calling_ae=event.assoc.requestor.ae_title)
    return EchoStatus.SUCCESS


@dataclass(frozen=True)
class StoreLimits:
    """Size limits ``handle_store`` applies (from ``settings.listener``)."""

    max_instance_bytes: int = 512 * 1024 * 1024
    max_nesting_depth: int = 32


def store_limits(settings: Any) -> StoreLimits:
    lst = settings.listener
    return StoreLimits(max_instance_bytes=lst.max_instance_bytes, max_nesting_depth=lst.max_nesting_depth)


def _short(value: object, limit: int = 80) -> str:
    """A network-supplied value cut for a log line (a UID may be 60,000 characters)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text)} chars]"


class _Refused(Exception):
    def __init__(self, status: StoreStatus, reason: str, **context: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.context = context


def _read_header(
    raw: bytes, transfer_syntax: str, meta_bytes: bytes, meta_values: tuple[str, str, str, str], spool: Spool, limits: StoreLimits
) -> Any:
    """The few header elements the index needs, read without trusting sizes.

    The plain walk of ``listener/header.py`` first (no pydicom objects); pydicom for
    anything it leaves alone (deflated, multi-valued, non-ASCII, malformed).
    """
    fields = read_header(raw, transfer_syntax)
    if fields is not None:
        return fields
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        return dcmread(BytesIO(b"".join((PREAMBLE, meta_bytes, raw))), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    # Deflated: inflate in bounded chunks into a scratch file and read that.
    sop_class, sop_uid, source, receiving = meta_values
    prefix = PREAMBLE + encode_file_meta(sop_class, sop_uid, ExplicitVRLittleEndian, source, receiving)
    scratch = spool.incoming / f"{uuid.uuid4().hex}.inflate"
    try:
        inflate_bounded(raw, limits.max_instance_bytes, scratch, prefix)
        return dcmread(scratch, stop_before_pixels=True, specific_tags=_HEADER_TAGS, defer_size=1024)
    except InflatedTooLarge as exc:
        raise _Refused(StoreStatus.TOO_LARGE, "deflated data set inflates past listener.max_instance_bytes", limit=limits.max_instance_bytes) from exc
    finally:
        scratch.unlink(missing_ok=True)


def handle_store(
    event: Event,
    spool: Spool,
    sink: RecordSink,
    quiet_seconds_for: Callable[[str], float],
    limits: StoreLimits = StoreLimits(),
) -> int:
    """Spool one instance durably, then acknowledge it (PS3.4 B.2.3 statuses).

    What reaches the disk is radnode's own file meta, built only from the
    association (calling/called AE, negotiated transfer syntax, the command's
    SOP class and instance), followed by the data set without any group
    0000-0002 elements the peer put in it.
    """
    calling = str(event.assoc.requestor.ae_title).strip()
    try:
        return _store(event, spool, sink, quiet_seconds_for, limits, calling)
    except _Refused as exc:
        log.warning("c-store refused", reason=exc.reason, status=f"0x{int(exc.status):04X}", calling_ae=calling, **exc.context)
        return exc.status


def _store(
    event: Event,
    spool: Spool,
    sink: RecordSink,
    quiet_seconds_for: Callable[[str], float],
    limits: StoreLimits,
    calling: str,
) -> int:
    request = event.request
    # The pull's C-GET path hands in a stand-in event without a DUL (listener/pull.py).
    sock = getattr(getattr(event.assoc, "dul", None), "socket", None)
    oversized = isinstance(sock, GuardedSocket) and sock.take_oversized()
    verdict = event.assoc.__dict__.get(_VERDICTS, {}).pop(request.MessageID, None)
    if verdict is not None:
        return verdict[0]  # logged when the command arrived (handle_dimse_recv)
    called = str(event.assoc.requestor.primitive.called_ae_title).strip()  # type: ignore[union-attr]
    sop_uid = str(request.AffectedSOPInstanceUID or "")  # type: ignore[union-attr]
    sop_class = str(request.AffectedSOPClassUID or "")  # type: ignore[union-attr]
    if oversized:
        raise _Refused(StoreStatus.TOO_LARGE, "data set larger than listener.max_instance_bytes", limit=limits.max_instance_bytes)
    if not is_valid_uid(sop_uid) or not is_valid_uid(sop_class):
        raise _Refused(StoreStatus.INVALID_UID, "invalid SOP instance/class UID in request", sop_uid=_short(sop_uid))
    raw = request.DataSet.getvalue() if request.DataSet is not None else b""  # type: ignore[union-attr]
    if not raw:
        raise _Refused(StoreStatus.EMPTY_DATA_SET, "0-byte data set", sop_uid=sop_uid)
    if len(raw) > limits.max_instance_bytes:
        raise _Refused(StoreStatus.TOO_LARGE, "data set larger than listener.max_instance_bytes", limit=limits.max_instance_bytes)

    transfer_syntax = str(event.context.transfer_syntax)  # the accepted presentation context's
    try:
        raw, dropped = strip_meta_groups(raw, transfer_syntax)
    except MalformedDataSet as exc:
        raise _Refused(StoreStatus.CANNOT_UNDERSTAND, "data set cannot be parsed", error=_short(exc, 200), sop_uid=sop_uid) from exc
    if dropped:
        log.warning(
            "file-meta elements inside a data set dropped",
            tags=[f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in dropped[:20]],
            calling_ae=calling,
            sop_uid=sop_uid,
        )
        if not raw:
            raise _Refused(StoreStatus.EMPTY_DATA_SET, "data set held only file-meta elements", sop_uid=sop_uid)
    try:
        check_nesting(raw, transfer_syntax, limits.max_nesting_depth)
    except NestingTooDeep as exc:
        raise _Refused(StoreStatus.NESTING_TOO_DEEP, str(exc), sop_uid=sop_uid) from exc
    meta_bytes = encode_file_meta(sop_class, sop_uid, transfer_syntax, calling, called)
    data = b"".join((PREAMBLE, meta_bytes, raw))
    try:
        header = _read_header(raw, transfer_syntax, meta_bytes, (sop_class, sop_uid, calling, called), spool, limits)
        study_uid = str(header.get("StudyInstanceUID", "") or "")
        series_uid = str(header.get("SeriesInstanceUID", "") or "")
        ds_sop_uid = str(header.get("SOPInstanceUID", "") or "")
        ds_sop_class = str(header.get("SOPClassUID", "") or "")
    except RecursionError as exc:
        raise _Refused(StoreStatus.NESTING_TOO_DEEP, "sequences nested too deeply", sop_uid=sop_uid) from exc
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure means "cannot understand"
        if isinstance(exc, _Refused):
            raise
        raise _Refused(StoreStatus.CANNOT_UNDERSTAND, "data set cannot be parsed", error=_short(exc, 200), sop_uid=sop_uid) from exc
    if not study_uid or not series_uid:
        raise _Refused(StoreStatus.CANNOT_UNDERSTAND, "missing Study/Series Instance UID", sop_uid=sop_uid)
    if ds_sop_uid and ds_sop_uid != sop_uid:
        raise _Refused(StoreStatus.DATASET_MISMATCH, "SOP Instance UID differs between command and data set", sop_uid=sop_uid)
    if ds_sop_class and ds_sop_class != sop_class:
        raise _Refused(StoreStatus.DATASET_MISMATCH, "SOP Class UID differs between command and data set", sop_uid=sop_uid)
    try:
        relative = spool.relative_path(study_uid, series_uid, sop_uid)
    except UnsafeUIDError as exc:
        raise _Refused(StoreStatus.INVALID_UID, _short(exc, 200)) from exc

    # The fast C-STORE path (faststore.py) runs this list after the peer has its answer: the file's
    # placing (the journal already holds it durably) and the index record wait there.
    after: list[Callable[[], None]] | None = getattr(event, "after_response", None)
    try:
        spool.write(relative, data, defer=after.append if after is not None else None)
    except DuplicateInstanceError as exc:
        raise _Refused(DUPLICATE_ELSEWHERE, "SOP Instance UID already stored in another study or series", sop_uid=sop_uid, stored_under=exc.existing) from exc
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            log.error("c-store refused: no space left in spool", sop_uid=sop_uid)
            return StoreStatus.OUT_OF_RESOURCES
        log.error("c-store failed to write", error=_short(exc, 200), sop_uid=sop_uid)
        return StoreStatus.OUT_OF_RESOURCES

    counts = event.assoc.__dict__.setdefault(_RECEIVED, {})
    counts[study_uid] = counts.get(study_uid, 0) + 1
    try:
        series_number = int(header.get("SeriesNumber")) if header.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        series_number = None
    record = InstanceRecord(
        sop_instance_uid=sop_uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        modality=str(header.get("Modality", "") or "")[:16],
        series_number=series_number,
        series_description=str(header.get("SeriesDescription", "") or "")[:64],
        accession=str(header.get("AccessionNumber", "") or "")[:16],
        calling_ae=calling,
        called_ae=called,
        received_at=time.time(),
        size=len(data),
        path=relative.as_posix(),
        quiet_seconds=quiet_seconds_for(called),
    )
    if after is not None:
        after.append(lambda: sink.submit(record))
    else:
        sink.submit(record)
    return StoreStatus.SUCCESS


def handle_released(event: Event, sink: RecordSink, complete_on_release_for: Callable[[str], bool]) -> None:
    """The sender released the association: its studies may be complete (study assembly decides).

    Only a release counts; an aborted association may have been cut off mid-study, so its studies wait for
    the quiet period. A called AE title configured with ``complete_on_release: false`` always waits too.
    """
    studies = event.assoc.__dict__.get(_RECEIVED)  # study UID → instances this association delivered
    called = event.assoc.requestor.primitive.called_ae_title if event.assoc.requestor.primitive else ""  # type: ignore[union-attr]
    if studies and complete_on_release_for(str(called or "")):
        sink.released(sorted(studies))
