"""How an HTTP conversation's failure reads, for every HTTP-speaking destination (FHIR, webhook).

The same three kinds as the DICOM diagnosis table (refused, stopped answering, aborted), so a job page and
``radnode destinations check`` word an unreachable FHIR server like an unreachable PACS.
"""

from __future__ import annotations

import httpx

from radnode.peers.dicom import FailureKind, PeerUnavailable


def http_failure(what: str, target: str, timeout: float, exc: Exception) -> PeerUnavailable:
    """*what* (e.g. "POST of the Bundle to FHIR server https://…") failed with *exc*; say how."""
    if isinstance(exc, httpx.TimeoutException):
        return PeerUnavailable(f"{what} did not answer within {timeout:g} s", FailureKind.STOPPED_ANSWERING, target)
    if isinstance(exc, httpx.ConnectError):
        return PeerUnavailable(f"{what}: cannot connect ({exc})", FailureKind.REFUSED, target)
    return PeerUnavailable(f"{what} failed: {exc}", FailureKind.ABORTED, target)
