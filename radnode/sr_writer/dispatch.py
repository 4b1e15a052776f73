"""The dispatch stage as a worker ``ResultWriter``: build every result
object from the analyzer's output and its source series, read each back,
C-STORE them to the job's destinations, confirm by C-FIND, and record the
per-destination outcome on the job.

A destination that keeps failing fails the attempt (the job is retried later
with growing delay, its error visible); because every UID derives from the
job identity, a re-send replaces rather than duplicates in PACS.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.model.analysis import AnalyzerInputs, AnalyzerResult, AnalyzerSpec
from radnode.store import jobs as jobstore
from radnode.model.jobs import AnalyzeJob
from radnode.settings import Settings
from radnode.peers.destinations import CallerIdentity, ResultDestination, open_destination
from radnode.peers.dicom import PeerUnavailable
from radnode.sr_writer.writer import WrittenObjects, write_results

log = structlog.get_logger(__name__)

TREND_KEYS = ("whole_tumor", "enhancing")


class SendFailed(RuntimeError):
    """Results could not be delivered to every destination (retryable)."""


def write_objects(
    settings: Settings,
    job_id: str,
    spec: AnalyzerSpec,
    inputs: AnalyzerInputs,
    result: AnalyzerResult,
    out_dir: Path,
    prior_results: list[tuple[str, dict[str, float]]] | None = None,
) -> WrittenObjects:
    """Build SEG, SR, PDF, Encapsulated PDF and secondary captures into *out_dir*."""
    if spec.model is None:
        raise ValueError(f"analyzer {spec.name} declares no model; results need one for provenance")
    return write_results(
        job_id=job_id,
        result=result,
        model=spec.model,
        out_dir=out_dir,
        application=spec.name,
        source_series={role: list(s.files) for role, s in inputs.series.items()},
        branding=settings.report,
        prior_results=prior_results or (),
        device_serial_number=settings.results.device_serial_number,
        segmentation_type=settings.results.segmentation_type,
        render_pages=settings.results.secondary_capture_pages,
        trend_keys=[k for k in TREND_KEYS if any(m.name == k for m in result.measurements)] or None,
    )


class DicomResultWriter:
    """Implements ``radnode.jobs.worker.ResultWriter``."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def __call__(
        self,
        job: AnalyzeJob,
        spec: AnalyzerSpec,
        inputs: AnalyzerInputs,
        result: AnalyzerResult,
        workdir: Path,
        progress: Callable[[str], None],
    ) -> list[str]:
        if not spec.outputs:
            return []  # the analyzer declares no DICOM outputs (e.g. measurements only)
        with self.sessions() as session:
            row = jobstore.get_job(session, job.job_id)
            priors = jobstore.prior_measurements(session, row, TREND_KEYS)
        written = write_objects(self.settings, job.job_id, spec, inputs, result, workdir / "results", priors)
        uids = list(written.sop_instance_uids.values())
        if not self.settings.results.send or not job.destinations:
            return uids
        progress("sending")
        files = written.dicom_files()
        sends: dict[str, Any] = {}
        errors = []
        caller = CallerIdentity(ae_title=self.settings.ae_title)
        for dest in job.destinations:
            target = open_destination(dest, caller)
            outcome = self._send(target, files)
            if self.settings.results.confirm and not outcome.get("error"):
                try:
                    found = target.confirm(job.study_instance_uid, written.series_instance_uids())
                    outcome["confirmed"] = all(n > 0 for n in found.values())
                    outcome["series_found"] = found
                except Exception as exc:  # a failed confirmation is recorded, not fatal
                    outcome["confirmed"] = False
                    outcome["confirm_error"] = str(exc)[:300]
            sends[dest.name] = outcome
            if outcome.get("error"):
                errors.append(f"{dest.name} ({dest.label}): {outcome['error']}")
        with self.sessions.begin() as session:
            jobstore.record_sends(session, job.job_id, sends)
            for name, outcome in sends.items():
                jobstore.record_event(session, "dispatch", "sent", job_id=job.job_id, study_instance_uid=job.study_instance_uid,
                                   detail=f"{name}: {outcome.get('sent', 0)} sent, {len(outcome.get('failed', {}))} failed, confirmed={outcome.get('confirmed')}")
        if errors:
            raise SendFailed("could not deliver results to " + "; ".join(errors))
        return uids

    def _send(self, dest: ResultDestination, files: list[Path]) -> dict[str, Any]:
        delays = list(self.settings.results.send_retry_delays)
        last_error = ""
        remaining = list(files)
        sent = 0
        failed: dict[str, str] = {}
        for attempt in range(1, self.settings.results.send_attempts + 1):
            try:
                report = dest.send(remaining)
            except (PeerUnavailable, OSError, RuntimeError) as exc:
                last_error = str(exc)[:300]
            else:
                sent += len(report.sent)
                failed = report.failed
                if report.ok:
                    return {"sent": sent, "failed": {}, "attempts": attempt}
                by_uid = set(report.failed)
                remaining = [f for f in remaining if _sop_uid(f) in by_uid]
                last_error = f"{len(report.failed)} instance(s) refused: " + ", ".join(sorted(set(report.failed.values())))
            log.warning("sending results failed; retrying", destination=dest.name, attempt=attempt, error=last_error)
            if attempt < self.settings.results.send_attempts:
                time.sleep(delays[min(attempt - 1, len(delays) - 1)])
        return {"sent": sent, "failed": failed, "attempts": self.settings.results.send_attempts, "error": last_error}


def _sop_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
