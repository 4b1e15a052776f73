"""C-STORE SCU: send DICOM files to a node, checking each instance's status.

Used to return results to PACS and, in the demo, to play the part of the
PACS sending a study in. One association per destination per call; the
status of every instance is reported, so a partial failure is never shown
as a success.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import structlog
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

log = structlog.get_logger(__name__)


@dataclass
class SendReport:
    """Per-instance outcome of one send."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class AssociationError(RuntimeError):
    """The destination refused or did not answer the association."""


def open_association(ae: AE, host: str, port: int, called_ae: str, purpose: str = "", tls_args: Any = None) -> Any:
    """Associate with *called_ae* at host:port; Nagle off; AssociationError if refused.

    pynetdicom never sets TCP_NODELAY, and without it every small PDU to
    DCMTK-based peers (Orthanc too) waits ~40 ms for a delayed ACK.
    """
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls_args)
    if not assoc.is_established:
        what = f"{purpose} association" if purpose else "association"
        raise AssociationError(f"{what} with {called_ae}@{host}:{port} was rejected or timed out")
    sock = assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def send_files(
    files: Iterable[Path],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "RADNODE",
    timeout: float = 30.0,
    tls_args: Any = None,
) -> SendReport:
    """C-STORE each file as stored (no re-encoding) over one association."""
    datasets = []
    for path in files:
        ds = dcmread(path)
        datasets.append((path, ds))
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts: dict[str, set[str]] = {}
    for _, ds in datasets:
        contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian}))
    assoc = open_association(ae, host, port, called_ae, tls_args=tls_args)
    report = SendReport()
    try:
        for path, ds in datasets:
            uid = str(ds.SOPInstanceUID)
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:  # a broken association fails the rest
                report.failed[uid] = str(exc)
                continue
            code = getattr(status, "Status", None)
            if code is None:
                report.failed[uid] = "no response (association aborted or timed out)"
            elif code in (0x0000, 0xB000, 0xB007, 0xB006):
                report.sent.append(uid)
            else:
                report.failed[uid] = f"status 0x{code:04X}"
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("c-store finished", destination=called_ae, sent=len(report.sent), failed=len(report.failed))
    return report


def confirm_series(
    study_instance_uid: str,
    series_instance_uids: Iterable[str],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "RADNODE",
    timeout: float = 30.0,
) -> dict[str, int]:
    """C-FIND (study root, SERIES level) for the series radnode just sent.

    Returns series UID → number of instances the destination reports (0 when
    it does not know the series), so a job can record that PACS really holds
    its results rather than trusting the C-STORE statuses alone.
    """
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    wanted = list(series_instance_uids)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = open_association(ae, host, port, called_ae, "C-FIND")
    found: dict[str, int] = {uid: 0 for uid in wanted}
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_instance_uid
        query.SeriesInstanceUID = ""
        query.NumberOfSeriesRelatedInstances = ""
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status is not None and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                uid = str(identifier.get("SeriesInstanceUID", ""))
                if uid in found:
                    try:
                        found[uid] = int(identifier.get("NumberOfSeriesRelatedInstances") or 1)
                    except (TypeError, ValueError):
                        found[uid] = 1
    finally:
        if assoc.is_established:
            assoc.release()
    return found


def stow_files(files: Iterable[Path], url: str) -> SendReport:
    """Store files in a DICOMweb service by STOW-RS (PS3.18 10.5), as stored.

    The response's Failed SOP Sequence names instances the service refused;
    each appears in the report as failed with its Failure Reason.
    """
    from dicomweb_client.api import DICOMwebClient
    from requests import RequestException

    datasets = [dcmread(p) for p in files]
    report = SendReport()
    client = DICOMwebClient(url=url.rstrip("/"))
    try:
        response = client.store_instances(datasets)
    except (RequestException, OSError) as exc:
        raise AssociationError(f"STOW-RS to {url} failed: {exc}") from exc
    except Exception as exc:  # dicomweb-client raises HTTPError subclasses
        raise AssociationError(f"STOW-RS to {url} failed: {exc}") from exc
    failed = {}
    for item in (response.get("FailedSOPSequence", []) if response is not None else []):
        failed[str(item.get("ReferencedSOPInstanceUID", ""))] = f"failure reason {item.get('FailureReason', '?')}"
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in failed:
            report.failed[uid] = failed[uid]
        else:
            report.sent.append(uid)
    log.info("stow-rs finished", url=url, sent=len(report.sent), failed=len(report.failed))
    return report


def confirm_series_dicomweb(study_instance_uid: str, series_instance_uids: Iterable[str], url: str) -> dict[str, int]:
    """QIDO-RS (series of the study) for the series radnode just stored."""
    from dicomweb_client.api import DICOMwebClient

    found = {uid: 0 for uid in series_instance_uids}
    client = DICOMwebClient(url=url.rstrip("/"))
    for item in client.search_for_series(study_instance_uid=study_instance_uid):
        uid = str(item.get("0020000E", {}).get("Value", [""])[0])
        if uid in found:
            count = item.get("00201209", {}).get("Value", [1])
            found[uid] = int(count[0]) if count else 1
    return found
