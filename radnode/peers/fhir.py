"""FHIR destinations: results into the EMR as a FHIR R4 transaction Bundle.

``{fhir: "https://host/base"}``. One ``transaction`` Bundle per job holds:

* a DiagnosticReport — status ``final``, category RAD, LOINC 18748-4
  "Diagnostic imaging study", the subject by patient identifier, the
  ImagingStudy by Study Instance UID (``urn:dicom:uid``), the conclusion (and
  the critical findings), the PDF as ``presentedForm``;
* one Observation per measurement, ``valueQuantity`` in UCUM, coded with the
  measurement's SNOMED CT / DICOM code where it has one;
* one Observation per finding, interpretation ``AA`` (critical abnormal) when
  critical.

Every resource is validated with ``fhir.resources`` before anything leaves.
The installed ``fhir.resources`` (8.x) ships R5 as its default and R4B
(4.3.0) as ``fhir.resources.R4B``; R4B's DiagnosticReport, Observation and
Bundle have the same elements as R4's for everything written here, so the
R4B models are the validator. Entries are conditional creates
(``ifNoneExist`` on a radnode identifier derived from the job), so a
retried job does not create a second report on a server that honours them.

The answer is read: 2xx is delivered (the transaction-response's locations
are kept), anything else fails with the OperationOutcome's issues as the
reason. Auth is ``delivery.fhir``: bearer token or basic, from secrets.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import structlog
from fhir.resources.R4B import get_fhir_model_class

from radnode.model.delivery import ResultPackage
from radnode.model.jobs import Destination
from radnode.peers.dicom import EchoResult, FailureKind, PeerUnavailable, SendReport
from radnode.peers.http import http_failure
from radnode.settings import DeliverySettings, FhirSettings

log = structlog.get_logger(__name__)

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
JOB_SYSTEM = "urn:radnode:job"
MEASUREMENT_SYSTEM = "urn:radnode:measurement"
PATIENT_SYSTEM = "urn:radnode:patient-id"
SCHEMES = {"SCT": "http://snomed.info/sct", "DCM": "http://dicom.nema.org/resources/ontology/DCM", "LN": LOINC, "UCUM": UCUM}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_NS = uuid.UUID("6f1d3c64-6a4b-4b8e-9a86-1c0f3f1d2b7a")


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '/'.join(parts))}"


def _date(package: ResultPackage) -> str | None:
    d = package.study_date
    if len(d) == 8 and d.isdigit():
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    return None


def validate_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate one resource with the R4B models; ValueError naming the resource."""
    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(kind))
        return model.model_validate(resource).model_dump(mode="json", exclude_none=True)  # type: ignore[no-any-return]
    except Exception as exc:
        raise ValueError(f"{kind} does not validate as FHIR R4(B): {exc}") from exc


def build_bundle(package: ResultPackage, *, now: datetime | None = None) -> dict[str, Any]:
    """The transaction Bundle for *package*; every resource and the Bundle validated."""
    issued = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    p = package.patient
    if not p.patient_id:
        raise ValueError("patient.patient_id: the FHIR report's subject is the patient identifier")
    subject = {"identifier": {"system": (f"urn:oid:{p.issuer}" if _is_oid(p.issuer) else PATIENT_SYSTEM if not p.issuer else f"{PATIENT_SYSTEM}:{p.issuer}"), "value": p.patient_id}}
    effective = _date(package)
    entries: list[dict[str, Any]] = []
    results = []
    for m in package.measurements:
        full = _urn(package.job_id, "measurement", m.name)
        coding = [{"system": MEASUREMENT_SYSTEM, "code": m.name, "display": m.name.replace("_", " ")}]
        if m.code:
            coding.insert(0, {"system": SCHEMES.get(m.code[1], f"urn:radnode:scheme:{m.code[1]}"), "code": m.code[0], "display": m.code[2]})
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [{"system": MEASUREMENT_SYSTEM, "value": f"{package.job_id}-{m.name}"}],
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}],
            "code": {"coding": coding, "text": m.name.replace("_", " ")},
            "subject": subject,
            "valueQuantity": {"value": m.value, "unit": m.unit, "system": UCUM, "code": m.unit},
        }
        if effective:
            obs["effectiveDateTime"] = effective
        entries.append(_entry(full, validate_resource(obs), MEASUREMENT_SYSTEM, f"{package.job_id}-{m.name}"))
        results.append({"reference": full})
    for f in package.findings:
        full = _urn(package.job_id, "finding", f.name)
        finding: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [{"system": MEASUREMENT_SYSTEM, "value": f"{package.job_id}-{f.name}"}],
            "status": "final",
            "code": {"coding": [{"system": MEASUREMENT_SYSTEM, "code": f.name}], "text": f.name.replace("_", " ")},
            "subject": subject,
            "valueBoolean": f.present,
        }
        if f.critical and f.present:
            finding["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": "AA", "display": "Critical abnormal"}]}]
        if f.detail:
            finding["note"] = [{"text": f.detail}]
        entries.append(_entry(full, validate_resource(finding), MEASUREMENT_SYSTEM, f"{package.job_id}-{f.name}"))
        results.append({"reference": full})
    conclusion = package.summary()
    if package.findings:
        conclusion += ". " + "; ".join(f"{f.name}: {'present' if f.present else 'absent'}" for f in package.findings)
    if package.demo:
        conclusion += ". DEMO MODEL - NOT FOR CLINICAL USE"
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": JOB_SYSTEM, "value": package.job_id}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}], "text": f"{package.application} AI analysis"},
        "subject": subject,
        "issued": issued,
        "imagingStudy": [{"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{package.study_instance_uid}"}, "display": package.study_description or "imaging study"}],
        "result": results,
        "conclusion": conclusion,
    }
    if package.accession:
        report["basedOn"] = [{"identifier": {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": package.accession}}]
    if effective:
        report["effectiveDateTime"] = effective
    if package.pdf:
        report["presentedForm"] = [{"contentType": "application/pdf", "data": base64.b64encode(package.pdf).decode("ascii"), "title": f"{package.application} report"}]
    entries.insert(0, _entry(_urn(package.job_id, "report"), validate_resource(report), JOB_SYSTEM, package.job_id))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    validate_resource(bundle)
    return bundle


def _is_oid(value: str) -> bool:
    return bool(value) and all(part.isdigit() for part in value.split("."))


def _entry(full_url: str, resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
    kind = resource["resourceType"]
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": kind, "ifNoneExist": f"identifier={system}|{value}"},
    }


def outcome_text(body: Any) -> str:
    """The issues of an OperationOutcome as one line (severity: diagnostics)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue", []) or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code", "")
        parts.append(f"{issue.get('severity', '?')}: {text}")
    return "; ".join(parts)


class FhirDestination:
    """A ``fhir`` destination: one transaction Bundle per job."""

    confirms = False

    def __init__(self, dest: Destination, caller: Any) -> None:
        if dest.fhir is None:
            raise ValueError(f"destination {dest.name!r} is not a FHIR destination")
        self.name = dest.name
        self.label = dest.label
        self.base = dest.fhir.rstrip("/")
        delivery: DeliverySettings = caller.delivery or DeliverySettings()
        self.settings: FhirSettings = delivery.fhir
        self.last_locations: list[str] = []
        self.acknowledgement = ""

    def _client(self) -> httpx.Client:
        s = self.settings
        headers = {"Accept": "application/fhir+json"}
        auth: Any = None
        if s.auth == "bearer":
            if s.token is None:
                raise PeerUnavailable("delivery.fhir.auth is bearer but delivery.fhir.token is not set", FailureKind.REJECTED, self.base)
            headers["Authorization"] = f"Bearer {s.token.get_secret_value()}"
        elif s.auth == "basic":
            auth = (s.username or "", s.password.get_secret_value() if s.password else "")
        verify: Any = str(s.ca_file) if s.ca_file else True
        return httpx.Client(headers=headers, auth=auth, timeout=s.timeout, verify=verify)

    def _unavailable(self, what: str, exc: Exception) -> PeerUnavailable:
        return http_failure(f"{what} to FHIR server {self.base}", self.base, self.settings.timeout, exc)

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        if package is None:
            raise ValueError("a FHIR destination needs the result package")
        report = SendReport()
        if package.job_id in done:
            return report
        bundle = build_bundle(package)
        try:
            with self._client() as client:
                response = client.post(self.base, json=bundle, headers={"Content-Type": "application/fhir+json"})
        except httpx.HTTPError as exc:
            raise self._unavailable("POST of the transaction Bundle", exc) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            reason = outcome_text(body) or response.text[:300] or response.reason_phrase
            raise PeerUnavailable(f"FHIR server {self.base} refused the Bundle: HTTP {response.status_code}: {reason}", FailureKind.STATUS, self.base)
        self.last_locations = [
            str((e.get("response") or {}).get("location", "")) for e in (body or {}).get("entry", []) if isinstance(e, dict)
        ] if isinstance(body, dict) else []
        report.sent.append(package.job_id)
        report_location = next((loc for loc in self.last_locations if loc.startswith("DiagnosticReport")), "")
        self.acknowledgement = f"HTTP {response.status_code}" + (f", {report_location}" if report_location else "")
        log.info("FHIR bundle accepted", destination=self.name, status=response.status_code, entries=len(bundle["entry"]))
        return report

    def confirm(self, study_instance_uid: str, series_instance_uids: Any) -> dict[str, int]:
        return {}

    def check(self) -> EchoResult:
        """GET ``[base]/metadata``: a CapabilityStatement means a FHIR server answers."""
        start = time.monotonic()
        try:
            with self._client() as client:
                response = client.get(f"{self.base}/metadata")
            body = response.json() if response.is_success else None
        except (httpx.HTTPError, ValueError, PeerUnavailable) as exc:
            failure = exc if isinstance(exc, PeerUnavailable) else self._unavailable("GET /metadata", exc)
            return EchoResult(False, None, str(failure), round((time.monotonic() - start) * 1000, 1), failure.kind)
        ms = round((time.monotonic() - start) * 1000, 1)
        if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
            return EchoResult(False, response.status_code, f"{self.base}/metadata answered HTTP {response.status_code} without a CapabilityStatement", ms, FailureKind.STATUS)
        return EchoResult(True, response.status_code, f"FHIR server answered (fhirVersion {body.get('fhirVersion', '?')})", ms)
