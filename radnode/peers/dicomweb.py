"""DICOMweb conversations: STOW-RS to store results, QIDO-RS to confirm them
and to check that a service answers (PS3.18 10.5, 10.6).

Failures are :class:`radnode.peers.dicom.PeerUnavailable` like DICOM ones, so
a job's send error reads the same way whatever the kind of destination.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import structlog
from pydicom import dcmread

from radnode.peers.dicom import EchoResult, FailureKind, PeerUnavailable, SendReport

log = structlog.get_logger(__name__)


def _client(url: str) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"))


def _unavailable(what: str, url: str, exc: Exception) -> PeerUnavailable:
    from requests import ConnectionError as RequestsConnectionError
    from requests import Timeout

    if isinstance(exc, Timeout):
        kind = FailureKind.CONNECT_TIMEOUT
    elif isinstance(exc, RequestsConnectionError):
        kind = FailureKind.REFUSED
    else:
        kind = FailureKind.STATUS
    return PeerUnavailable(f"{what} to {url} failed: {exc}", kind, url)


def stow_files(files: Iterable[Path], url: str) -> SendReport:
    """Store files by STOW-RS, as stored.

    The response's Failed SOP Sequence names instances the service refused;
    each appears in the report as failed with its Failure Reason.
    """
    datasets = [dcmread(p) for p in files]
    report = SendReport()
    try:
        response = _client(url).store_instances(datasets)
    except Exception as exc:  # requests errors and dicomweb-client's HTTPError subclasses
        raise _unavailable("STOW-RS", url, exc) from exc
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


def confirm_series(study_instance_uid: str, series_instance_uids: Iterable[str], url: str) -> dict[str, int]:
    """QIDO-RS (series of the study) for the series radnode just stored."""
    found = {uid: 0 for uid in series_instance_uids}
    try:
        items = _client(url).search_for_series(study_instance_uid=study_instance_uid)
    except Exception as exc:
        raise _unavailable("QIDO-RS", url, exc) from exc
    for item in items:
        uid = str(item.get("0020000E", {}).get("Value", [""])[0])
        if uid in found:
            count = item.get("00201209", {}).get("Value", [1])
            found[uid] = int(count[0]) if count else 1
    return found


def check(url: str) -> EchoResult:
    """A QIDO-RS query for one study: does the service answer at all?"""
    start = time.monotonic()
    try:
        _client(url).search_for_studies(limit=1)
    except Exception as exc:
        failure = _unavailable("QIDO-RS", url, exc)
        return EchoResult(False, None, str(failure), round((time.monotonic() - start) * 1000, 1), failure.kind)
    return EchoResult(True, None, "QIDO-RS answered", round((time.monotonic() - start) * 1000, 1))
