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
from dataclasses import dataclass
from io import BytesIO
from collections.abc import Iterable
from typing import Any, Callable, Protocol

import structlog
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom.dsutils import encode_file_meta
from pynetdicom import evt
from pynetdicom.events import Event

from radnode.listener.spool import Spool, UnsafeUIDError
from radnode.listener.status import EchoStatus, StoreStatus
from radnode.store.studies import InstanceRecord
from radnode.uids import is_valid_uid

log = structlog.get_logger(__name__)

_HEADER_TAGS = [
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "AccessionNumber",
]
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
#: pynetdicom's DUL thread sleeps ``_run_loop_delay`` (1 ms) whenever a loop
#: found nothing to do, which adds up to ~1 ms before each C-STORE response
#: leaves and before the next request is read. 0.2 ms gave +8-18% images/s on
#: one association (bench/ingest.py, BENCHMARKS.md) for ~+3% of a core per
#: idle association.
_DUL_POLL_DELAY = 0.0002


class RecordSink(Protocol):
    def submit(self, record: InstanceRecord) -> None: ...

    def released(self, study_instance_uids: Iterable[str], at: float | None = None) -> None: ...


def _delivered_studies(assoc: Any) -> set[str]:
    """The studies an association has delivered instances of (kept on the association object)."""
    studies = getattr(assoc, "_radnode_studies", None)
    if studies is None:
        studies = set()
        assoc._radnode_studies = studies
    return studies


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

    Also shortens the DUL's idle poll (see ``_DUL_POLL_DELAY``).
    """
    dul = event.assoc.dul
    if getattr(dul, "_run_loop_delay", 0) > _DUL_POLL_DELAY:
        dul._run_loop_delay = _DUL_POLL_DELAY
    sock = dul.socket
    if sock is not None and sock.socket is not None:
        try:
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def handle_requested(event: Event, policy: PeerPolicy) -> None:
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
    # Rejected-permanent by the service user; kill() lets the DUL flush the
    # A-ASSOCIATE-RJ before the socket closes (as pynetdicom's own checks do).
    assoc.acse.send_reject(0x01, 0x01, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def handle_echo(event: Event) -> int:
    log.debug("c-echo", calling_ae=event.assoc.requestor.ae_title)
    return EchoStatus.SUCCESS


def handle_store(
    event: Event,
    spool: Spool,
    sink: RecordSink,
    quiet_seconds_for: Callable[[str], float],
) -> int:
    """Spool one instance durably, then acknowledge it (PS3.4 B.2.3 statuses)."""
    request = event.request
    calling = event.assoc.requestor.ae_title
    called = event.assoc.requestor.primitive.called_ae_title  # type: ignore[union-attr]
    sop_uid = str(request.AffectedSOPInstanceUID or "")
    sop_class = str(request.AffectedSOPClassUID or "")
    if not is_valid_uid(sop_uid) or not is_valid_uid(sop_class):
        log.warning("c-store refused", reason="invalid SOP instance/class UID in request", calling_ae=calling)
        return StoreStatus.INVALID_UID

    try:
        meta = event.file_meta
        meta.SourceApplicationEntityTitle = calling
        meta.ReceivingApplicationEntityTitle = called
        data = b"".join((b"\x00" * 128, b"DICM", encode_file_meta(meta), request.DataSet.getvalue()))  # type: ignore[union-attr]
        header = dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        study_uid = str(header.get("StudyInstanceUID", "") or "")
        series_uid = str(header.get("SeriesInstanceUID", "") or "")
        ds_sop_uid = str(header.get("SOPInstanceUID", "") or "")
    except (InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OSError, NotImplementedError) as exc:
        log.warning("c-store refused", reason="data set cannot be parsed", error=str(exc)[:200], sop_uid=sop_uid)
        return StoreStatus.CANNOT_UNDERSTAND
    if not study_uid or not series_uid:
        log.warning("c-store refused", reason="missing Study/Series Instance UID", sop_uid=sop_uid)
        return StoreStatus.CANNOT_UNDERSTAND
    if ds_sop_uid and ds_sop_uid != sop_uid:
        log.warning("c-store refused", reason="SOP Instance UID differs between command and data set", sop_uid=sop_uid)
        return StoreStatus.DATASET_MISMATCH
    try:
        relative = spool.relative_path(study_uid, series_uid, sop_uid)
    except UnsafeUIDError as exc:
        log.warning("c-store refused", reason=str(exc), calling_ae=calling)
        return StoreStatus.INVALID_UID

    try:
        spool.write(relative, data)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            log.error("c-store refused: no space left in spool", sop_uid=sop_uid)
            return StoreStatus.OUT_OF_RESOURCES
        log.error("c-store failed to write", error=str(exc), sop_uid=sop_uid)
        return StoreStatus.OUT_OF_RESOURCES

    try:
        series_number = int(header.get("SeriesNumber")) if header.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    _delivered_studies(event.assoc).add(study_uid)
    sink.submit(
        InstanceRecord(
            sop_instance_uid=sop_uid,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_class_uid=sop_class,
            transfer_syntax_uid=str(meta.TransferSyntaxUID),
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
    )
    return StoreStatus.SUCCESS


def handle_released(event: Event, sink: RecordSink, complete_on_release_for: Callable[[str], bool]) -> None:
    """The sender released the association: its studies may be complete (study assembly decides).

    Only a release counts; an aborted association may have been cut off mid-study, so its studies wait for
    the quiet period. A called AE title configured with ``complete_on_release: false`` always waits too.
    """
    studies = getattr(event.assoc, "_radnode_studies", None)
    called = event.assoc.requestor.primitive.called_ae_title if event.assoc.requestor.primitive else ""  # type: ignore[union-attr]
    if studies and complete_on_release_for(str(called or "")):
        sink.released(sorted(studies))
