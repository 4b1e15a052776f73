"""Webhook destinations: a JSON POST for paging and chat systems.

``{webhook: "https://pager.example.org/hooks/radnode"}``, mostly named under
a rule's ``notify`` so critical findings reach whoever is on call. The body
carries no patient data — the job id, the application, whether the result is
critical and which findings, the measurements, and the link to the job page
behind login — so it can go to systems outside the clinical record. A 2xx
answer is the acknowledgement; anything else fails the destination with the
status and the start of the answer, and is retried like every destination.
The request carries ``Idempotency-Key: <job id>`` so a receiver can drop a
repeat.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
import structlog

from radnode.model.delivery import ResultPackage
from radnode.model.jobs import Destination
from radnode.peers.dicom import EchoResult, FailureKind, PeerUnavailable, SendReport
from radnode.peers.http import http_failure

log = structlog.get_logger(__name__)


def webhook_body(package: ResultPackage) -> dict[str, Any]:
    """The JSON a webhook receives: no names, IDs, dates or accession numbers."""
    return {
        "job_id": package.job_id,
        "application": package.application,
        "critical": package.critical,
        "summary": package.summary(),
        "critical_findings": [{"name": f.name, "probability": f.probability, "detail": f.detail} for f in package.critical_findings],
        "measurements": [{"name": m.name, "value": m.value, "unit": m.unit} for m in package.measurements],
        "job_url": package.job_url,
        "demo": package.demo,
    }


class WebhookDestination:
    """A ``webhook`` destination: one JSON POST per job."""

    confirms = False

    def __init__(self, dest: Destination, caller: Any) -> None:
        if dest.webhook is None:
            raise ValueError(f"destination {dest.name!r} is not a webhook destination")
        self.name = dest.name
        self.label = dest.label
        self.url = dest.webhook
        self.timeout = float(getattr(caller, "timeout", 30.0))
        self.acknowledgement = ""

    def _unavailable(self, exc: Exception) -> PeerUnavailable:
        return http_failure(f"webhook {self.url}", self.url, self.timeout, exc)

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        if package is None:
            raise ValueError("a webhook destination needs the result package")
        report = SendReport()
        if package.job_id in done:
            return report
        try:
            response = httpx.post(self.url, json=webhook_body(package), timeout=self.timeout, headers={"Idempotency-Key": package.job_id})
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if not response.is_success:
            raise PeerUnavailable(f"webhook {self.url} answered HTTP {response.status_code}: {response.text[:200]}", FailureKind.STATUS, self.url)
        self.acknowledgement = f"HTTP {response.status_code}"
        report.sent.append(package.job_id)
        log.info("webhook delivered", destination=self.name, status=response.status_code, critical=package.critical)
        return report

    def confirm(self, study_instance_uid: str, series_instance_uids: Any) -> dict[str, int]:
        return {}

    def check(self) -> EchoResult:
        """Any HTTP answer (even 405 to a GET) shows the receiver is there."""
        start = time.monotonic()
        try:
            response = httpx.get(self.url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            failure = self._unavailable(exc)
            return EchoResult(False, None, str(failure), round((time.monotonic() - start) * 1000, 1), failure.kind)
        return EchoResult(True, response.status_code, f"webhook answered HTTP {response.status_code}", round((time.monotonic() - start) * 1000, 1))
