"""The result package: what a job's results are, for destinations that take
a message rather than DICOM files (e-mail, HL7 v2, FHIR).

A DICOM destination gets files; an e-mail, an ORU^R01 or a FHIR Bundle needs
the identifiers, the measurements with units and codes, the findings, the PDF
and a link to the job page. The dispatch stage builds this package once from
what it already holds (job row, source headers, analyzer result, written PDF)
and hands the same object to every destination, so the ORU's OBX values, the
FHIR Observations and the e-mail's table cannot disagree.

Like the rest of :mod:`radnode.model` it imports nothing from radnode.
Constructors validate their arguments (highdicom style) and name the argument
that is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PackagedMeasurement:
    """One measurement as it leaves radnode: value, UCUM unit, optional code.

    ``code`` is (code value, coding scheme designator, meaning) as in the SR,
    e.g. ``("118565006", "SCT", "Volume")``.
    """

    name: str
    value: float
    unit: str
    code: tuple[str, str, str] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: a measurement needs a name")
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool) or not math.isfinite(self.value):
            raise ValueError(f"value: measurement {self.name!r} needs a finite number, got {self.value!r}")
        if not isinstance(self.unit, str):
            raise TypeError(f"unit: measurement {self.name!r} needs a UCUM unit string")
        if self.code is not None and (len(self.code) != 3 or not all(isinstance(c, str) and c for c in self.code)):
            raise ValueError(f"code: measurement {self.name!r}: expected (value, scheme, meaning), got {self.code!r}")


@dataclass(frozen=True)
class PackagedFinding:
    """A qualitative finding; ``critical`` ones go to ``notify`` destinations too."""

    name: str
    present: bool
    probability: float | None = None
    detail: str = ""
    critical: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: a finding needs a name")
        if self.probability is not None and not (0.0 <= self.probability <= 1.0):
            raise ValueError(f"probability: finding {self.name!r}: must be within 0..1, got {self.probability!r}")


@dataclass(frozen=True)
class PatientIdentity:
    """Who the results are about. PHI: never logged, mailed only when allowed."""

    patient_id: str = ""
    issuer: str = ""
    name: str = ""
    birth_date: str = ""  # YYYYMMDD as in DICOM
    sex: str = ""  # DICOM M / F / O


@dataclass(frozen=True)
class ResultPackage:
    """One job's results for message destinations (built once per dispatch)."""

    job_id: str
    application: str
    study_instance_uid: str
    accession: str = ""
    patient: PatientIdentity = field(default_factory=PatientIdentity)
    #: Referring Physician's Name (0008,0090) as DICOM writes it (``Family^Given``).
    referring_physician: str = ""
    study_description: str = ""
    study_date: str = ""
    study_time: str = ""
    measurements: tuple[PackagedMeasurement, ...] = ()
    findings: tuple[PackagedFinding, ...] = ()
    conclusion: str = ""
    model_name: str = ""
    model_version: str = ""
    demo: bool = False
    pdf: bytes | None = None
    #: Where a logged-in clinician sees the job (empty when no base URL is set).
    job_url: str = ""
    institution: str = "radnode"

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("job_id: a result package needs the job id")
        if not self.study_instance_uid:
            raise ValueError("study_instance_uid: a result package needs the study")
        if not all(isinstance(m, PackagedMeasurement) for m in self.measurements):
            raise TypeError("measurements: expected PackagedMeasurement items")
        if not all(isinstance(f, PackagedFinding) for f in self.findings):
            raise TypeError("findings: expected PackagedFinding items")
        if self.pdf is not None and not self.pdf.startswith(b"%PDF"):
            raise ValueError("pdf: not a PDF document")

    @property
    def critical(self) -> bool:
        """Whether any finding present is marked critical."""
        return any(f.critical and f.present for f in self.findings)

    @property
    def critical_findings(self) -> tuple[PackagedFinding, ...]:
        return tuple(f for f in self.findings if f.critical and f.present)

    def summary(self) -> str:
        """One line for subjects and conclusions; no PHI."""
        if self.critical:
            return f"CRITICAL: {', '.join(f.name for f in self.critical_findings)} ({self.application})"
        return f"{self.application} results"
