"""The dispatch stage as a worker ``ResultWriter``: build every result
object from the analyzer's output and its source series, read each back,
C-STORE them to the job's destinations, confirm by C-FIND, and record the
per-destination outcome on the job.

A destination that keeps failing fails the attempt (the job is retried later
with growing delay, its error visible); because every UID derives from the
job identity, a re-send replaces rather than duplicates in PACS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import structlog
from sqlalchemy.orm import Session, sessionmaker

from radnode.model.analysis import AnalyzerInputs, AnalyzerResult, AnalyzerSpec
from radnode.model.delivery import ResultPackage
from radnode.model.jobs import AnalyzeJob
from radnode.model.lesion_rows import TREND_KEYS as MET_TREND_KEYS
from radnode.peers.destinations import CallerIdentity, ResultDestination, open_destination
from radnode.peers.dicom import PeerUnavailable
from radnode.settings import Settings
from radnode.sr_writer.package import build_package
from radnode.sr_writer.writer import ResultWriteError, WrittenObjects, write_results
from radnode.store import jobs as jobstore

log = structlog.get_logger(__name__)

TREND_KEYS = ("whole_tumor", "enhancing")


#: Destination kinds that take the result package rather than DICOM files.
MESSAGE_KINDS = frozenset({"email", "hl7", "fhir", "webhook"})


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
    model = result.model_or(spec.model)
    if model is None:
        raise ValueError(f"analyzer {spec.name} declares no model; results need one for provenance")
    return write_results(
        job_id=job_id,
        result=result,
        model=model,
        out_dir=out_dir,
        application=spec.name,
        source_series={role: list(s.files) for role, s in inputs.series.items()},
        branding=settings.report,
        prior_results=prior_results or (),
        device_serial_number=settings.results.device_serial_number,
        segmentation_type=settings.results.segmentation_type,
        render_pages=settings.results.secondary_capture_pages,
        trend_keys=[k for k in (*TREND_KEYS, *MET_TREND_KEYS) if any(m.name == k for m in result.measurements)] or None,
    )


class DicomResultWriter:
    """Implements ``radnode.jobs.worker.ResultWriter``.

    Besides DICOM files it builds the job's :class:`ResultPackage` once and
    hands it to every destination, so e-mail, HL7 and FHIR destinations go
    through the same loop, retries and bookkeeping as C-STORE and STOW-RS.

    Delivery is recorded per destination as soon as it happens (``sends_json``
    on the job: kind, label, delivered items, when, the acknowledgement). A
    retried job — by the queue after a failure, or by an operator — reads
    that record first: a destination already delivered is skipped, and a
    partly delivered one gets only what it is missing (SOP instances,
    recipients), so nothing is sent twice. ``notify`` destinations receive
    only results with a critical finding.
    """

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
        message_dests = [d for d in job.destinations if d.kind in MESSAGE_KINDS]
        if not spec.outputs and not message_dests:
            return []  # the analyzer declares no DICOM outputs (e.g. measurements only)
        with self.sessions() as session:
            row = jobstore.get_job(session, job.job_id)
            priors = jobstore.prior_measurements(session, row, spec.prior_rows or TREND_KEYS)
            accession = row.accession
            previous: dict[str, Any] = json.loads(row.sends_json or "{}")
        try:
            written = write_objects(self.settings, job.job_id, spec, inputs, result, workdir / "results", priors) if spec.outputs else None
        except (ResultWriteError, ValueError, TypeError) as exc:
            # Building the objects is deterministic: a retry would fail the same
            # way, so the job fails now with the writer's reason (the worker
            # treats ResultWriteError as permanent, like an AnalyzerError).
            raise ResultWriteError(f"writing results failed: {exc}") from exc
        uids = list(written.sop_instance_uids.values()) if written else []
        if not self.settings.results.send or not job.destinations:
            return uids
        progress("sending")
        files = written.dicom_files() if written else []
        pdf = written.paths.get("pdf") if written else None
        package = build_package(self.settings, job, spec, inputs, result, pdf if isinstance(pdf, Path) else None, accession=accession)
        errors = []
        deid = self._deidentifier() if any(d.external for d in job.destinations) else None
        caller = CallerIdentity(ae_title=self.settings.ae_title, delivery=self.settings.delivery, branding=self.settings.report,
                                peers=tuple(self.settings.peers), deid=deid)
        for dest in job.destinations:
            before = previous.get(dest.name) or {}
            if before.get("delivered") and before.get("label", dest.label) == dest.label:
                log.info("destination already delivered; not sent again", destination=dest.name, job_id=job.job_id)
                continue
            base = {"kind": dest.kind, "label": dest.label, "notify": dest.notify}
            if dest.external:
                base["deidentified"] = True  # PS3.15 E.1 basic profile; the map stays here
            if dest.notify and not package.critical:
                self._record(job, dest.name, {**base, "delivered": False, "skipped": "no critical finding"}, None)
                continue
            target = open_destination(dest, caller)
            if dest.kind not in MESSAGE_KINDS and not files:
                self._record(job, dest.name, {**base, "delivered": False, "skipped": "no DICOM objects to send"}, None)
                continue
            outcome = {**base, **self._send(target, files, package, list(before.get("items", [])))}
            if before.get("bounces"):
                outcome["bounces"] = before["bounces"]  # bounces that came back later (radnode mail bounces) stay on record
            if not outcome.get("error"):
                outcome["at"] = time.time()
                if target.confirms and self.settings.results.confirm and written is not None:
                    try:
                        found = target.confirm(job.study_instance_uid, written.series_instance_uids())
                        outcome["confirmed"] = all(n > 0 for n in found.values())
                        outcome["series_found"] = found
                    except Exception as exc:  # a failed confirmation is recorded, not fatal
                        outcome["confirmed"] = False
                        outcome["confirm_error"] = str(exc)[:300]
                elif not target.confirms:
                    # The send's own answer (SMTP accept, HL7 ACK, FHIR 2xx) is the confirmation.
                    outcome["confirmed"] = True
                    outcome["acknowledgement"] = str(getattr(target, "acknowledgement", ""))[:300]
            self._record(job, dest.name, outcome, f"{outcome.get('sent', 0)} sent, {len(outcome.get('failed', {}))} failed, confirmed={outcome.get('confirmed')}")
            if outcome.get("error"):
                errors.append(f"{dest.name} ({dest.label}): {outcome['error']}")
        if errors:
            raise SendFailed("could not deliver results to " + "; ".join(errors))
        return uids

    def _deidentifier(self) -> Any:
        """The de-identifier for external destinations: the node's key, the map in its database."""
        from radnode.deid import node_deidentifier

        return node_deidentifier(self.settings, self.sessions)

    def _record(self, job: AnalyzeJob, name: str, outcome: dict[str, Any], detail: str | None) -> None:
        """Store one destination's outcome now, so a crash later cannot make it re-send."""
        with self.sessions.begin() as session:
            jobstore.record_send(session, job.job_id, name, outcome)
            if detail is not None:
                action = "notified" if outcome.get("notify") else "sent:deidentified" if outcome.get("deidentified") else "sent"
                jobstore.record_event(session, "dispatch", action, job_id=job.job_id, study_instance_uid=job.study_instance_uid,
                                      detail=f"{name}: {detail}" + (f"; error: {outcome['error']}" if outcome.get("error") else ""))

    def _send(self, dest: ResultDestination, files: list[Path], package: ResultPackage, done: list[str]) -> dict[str, Any]:
        delays = list(self.settings.results.send_retry_delays)
        last_error = ""
        delivered = list(done)
        failed: dict[str, str] = {}
        for attempt in range(1, self.settings.results.send_attempts + 1):
            try:
                report = dest.send(files, package, done=delivered)
            except (PeerUnavailable, OSError, RuntimeError, ValueError) as exc:
                last_error = str(exc)[:300]
            else:
                delivered += [item for item in report.sent if item not in delivered]
                failed = report.failed
                if report.ok:
                    return {"sent": len(delivered), "items": delivered, "failed": {}, "attempts": attempt, "delivered": True}
                last_error = f"{len(report.failed)} item(s) refused: " + ", ".join(sorted(set(report.failed.values())))
            log.warning("sending results failed; retrying", destination=dest.name, attempt=attempt, error=last_error)
            if attempt < self.settings.results.send_attempts:
                time.sleep(delays[min(attempt - 1, len(delays) - 1)])
        return {"sent": len(delivered), "items": delivered, "failed": failed, "attempts": self.settings.results.send_attempts,
                "error": last_error, "delivered": False}
