"""Build the :class:`~radnode.model.delivery.ResultPackage` of a job once, in
the dispatch stage, from what it already holds: the job's source headers,
the analyzer's result, the written PDF and the web app's address.

Every message destination (e-mail, HL7, FHIR) then reads the same package,
so their values cannot drift apart or from the job's stored measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import dcmread

from radnode.model.analysis import AnalyzerInputs, AnalyzerResult, AnalyzerSpec
from radnode.model.delivery import PackagedFinding, PackagedMeasurement, PatientIdentity, ResultPackage
from radnode.model.jobs import AnalyzeJob
from radnode.settings import Settings

_HEADER_TAGS = [
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
    "StudyDescription", "StudyDate", "StudyTime", "AccessionNumber", "InstitutionName",
]


def _header(inputs: AnalyzerInputs) -> dict[str, str]:
    for series in inputs.series.values():
        for path in series.files[:1]:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            return {tag: str(ds.get(tag, "") or "") for tag in _HEADER_TAGS}
    return {tag: "" for tag in _HEADER_TAGS}


def job_url(settings: Settings, job_id: str) -> str:
    base = settings.delivery.job_url_base.rstrip("/")
    return f"{base}/jobs/{job_id}" if base else ""


def build_package(
    settings: Settings,
    job: AnalyzeJob,
    spec: AnalyzerSpec,
    inputs: AnalyzerInputs,
    result: AnalyzerResult,
    pdf_path: Path | None,
    *,
    accession: str = "",
) -> ResultPackage:
    """One job's results as a package for message destinations."""
    h = _header(inputs)
    measurements = tuple(
        PackagedMeasurement(m.name, float(m.value), m.unit, tuple(m.code) if m.code else None)  # type: ignore[arg-type]
        for m in result.measurements
    )
    findings = tuple(PackagedFinding(f.name, f.present, f.probability, f.detail, f.critical) for f in result.findings)
    extra: dict[str, Any] = {}
    model = result.model_or(spec.model)
    if model is not None:
        extra = {"model_name": model.name, "model_version": model.version, "demo": model.demo}
    return ResultPackage(
        job_id=job.job_id,
        application=job.application,
        study_instance_uid=job.study_instance_uid,
        accession=accession or h["AccessionNumber"],
        patient=PatientIdentity(
            patient_id=h["PatientID"], issuer=h["IssuerOfPatientID"], name=h["PatientName"],
            birth_date=h["PatientBirthDate"], sex=h["PatientSex"],
        ),
        referring_physician=h["ReferringPhysicianName"],
        study_description=h["StudyDescription"],
        study_date=h["StudyDate"],
        study_time=h["StudyTime"],
        measurements=measurements,
        findings=findings,
        pdf=pdf_path.read_bytes() if pdf_path is not None and pdf_path.is_file() else None,
        job_url=job_url(settings, job.job_id),
        institution=settings.report.institution_name,
        **extra,
    )
