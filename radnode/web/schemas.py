"""Request and response bodies of the JSON API (what OpenAPI documents)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobTimes(BaseModel):
    created: str | None = None
    queued: str | None = None
    preprocessing: str | None = None
    inferring: str | None = None
    writing: str | None = None
    sending: str | None = None
    finished: str | None = None


class Bounce(BaseModel):
    """A delivery status notification (RFC 3464) for one recipient of an e-mail destination."""

    recipient: str
    action: str
    status: str = ""
    diagnostic: str = ""
    reporting_mta: str = ""
    at: str | None = None
    text: str = ""


class Delivery(BaseModel):
    """One destination's delivery of a job's results (``radnode.store.deliveries``)."""

    name: str
    kind: str
    label: str
    notify: bool
    state: str
    at: str | None = None
    acknowledged: str = ""
    sent: int = 0
    failed: int = 0
    attempts: int = 0
    error: str = ""
    #: Bounces that came back after the SMTP server accepted the message (e-mail only).
    bounced: list[Bounce] = Field(default_factory=list)


class Finding(BaseModel):
    """A qualitative finding of the job's last run; ``critical`` ones someone must act on now."""

    name: str
    present: bool
    probability: float | None = None
    detail: str = ""
    critical: bool = False


class JobOut(BaseModel):
    job_id: str
    study_instance_uid: str
    accession: str = ""
    application: str
    model_version: str
    trigger: str
    state: str
    attempts: int
    error: str | None = None
    series: dict[str, str]
    selection: dict[str, Any]
    flags: list[str]
    priority: int = Field(0, description="Queue priority: urgent applications' jobs go ahead of elective ones.")
    urgent: bool = False
    critical: bool = Field(False, description="A finding of the last run is present and critical.")
    critical_findings: list[str] = Field(default_factory=list, description="Names of the present critical findings.")
    findings: list[Finding] = Field(default_factory=list)
    superseded_by: str | None = None
    result_uids: list[str]
    destinations: list[dict[str, Any]]
    times: JobTimes
    #: Per destination: kind, where, delivered/failed/skipped/pending, when, acknowledgement, notify.
    deliveries: list[Delivery] = Field(default_factory=list)


class Measurement(BaseModel):
    name: str
    value: float
    unit: str
    code: str | None = None


class Stage(BaseModel):
    stage: str
    at: str
    seconds: float | None = Field(None, description="Time until the next stage (None for the last).")


class Event(BaseModel):
    at: str
    actor: str
    action: str
    detail: str


class KeyImage(BaseModel):
    name: str
    title: str


class ResultFiles(BaseModel):
    report_pdf: bool
    key_images: list[KeyImage]
    #: Lesion index → thumbnail file name (served at /jobs/{job_id}/images/{name}).
    lesion_thumbnails: dict[int, str] = Field(default_factory=dict)


class MetastasisLesion(BaseModel):
    """One lesion of a metastasis job (rows ``met_<k>_*``, :mod:`radnode.model.lesion_rows`)."""

    index: int
    track: int
    diameter_mm: float | None
    volume_ml: float | None
    confidence: float | None
    status: str = Field(description="baseline, new, enlarging, stable or shrinking")
    location: str
    diameter_change_pct: float | None
    volume_change_pct: float | None
    thumbnail: str | None = None


class ResolvedMetastasis(BaseModel):
    track: int
    status: str
    location: str
    prior_diameter_mm: float | None
    prior_volume_ml: float | None


class Metastases(BaseModel):
    """A metastasis job's lesions against the prior exam: automated measurement, not a RANO-BM assessment."""

    count: int
    total_volume_ml: float | None
    sum_diameters_mm: float | None
    prior_count: float | None
    prior_total_volume_ml: float | None
    lesions: list[MetastasisLesion]
    resolved: list[ResolvedMetastasis]


class RetrainingCase(BaseModel):
    note: str
    flagged_by: str
    archive_path: str
    at: str


class JobDetail(JobOut):
    options: dict[str, Any]
    measurements: list[Measurement]
    stages: list[Stage]
    events: list[Event]
    files: ResultFiles
    retraining: list[RetrainingCase]
    metastases: Metastases | None = None


class SubmitRequest(_Body):
    accession: str = Field(min_length=1, max_length=16)
    application: str
    options: dict[str, Any] = Field(default_factory=dict)
    pacs: str | None = Field(default=None, description="A peer name from settings.peers; default the first.")


class SubmitAccepted(BaseModel):
    pull_id: int
    state: str
    job_id: str | None = None


class PullOut(BaseModel):
    pull_id: int
    state: str = Field(description="finding, retrieving, received, routed or failed")
    message: str
    accession: str
    application: str
    pacs: str
    requested_by: str
    study_instance_uid: str | None
    instances_expected: int | None
    instances_received: int
    job_id: str | None = Field(description="The job the pulled study became, once routed.")


class FlagRequest(_Body):
    note: str = Field(default="", max_length=4000)


class FlagResult(BaseModel):
    job_id: str
    archive_path: str
    input_instances: int


class RoutingOut(BaseModel):
    path: str
    text: str
    sha256: str
    editable: bool = Field(description="False while routing.rules_file is unset (the packaged default is read-only).")


class RoutingPut(_Body):
    text: str = Field(max_length=1_000_000)
    comment: str = Field(default="", max_length=500)
    base_sha256: str | None = Field(default=None, description="sha256 of the text the edit started from; refuses lost updates.")


class Issue(BaseModel):
    line: int
    column: int
    message: str


class RoutingInvalid(BaseModel):
    detail: str
    issues: list[Issue]


class RoutingVersion(BaseModel):
    id: int
    created_at: float
    author: str
    comment: str


class EchoRequest(_Body):
    peer: str | None = Field(default=None, description="A peer name from settings.peers; all peers when unset.")


class DestinationCheckRequest(_Body):
    destination: str | None = Field(default=None, description="A destination name from the routing file; all when unset.")


class DestinationCheck(BaseModel):
    destination: str
    kind: str
    label: str
    ok: bool
    status: str | None
    diagnosis: str
    ms: float | None


class EchoResult(BaseModel):
    peer: str
    ae_title: str
    host: str
    port: int
    ok: bool
    status: str | None
    diagnosis: str
    ms: float | None


class Problem(BaseModel):
    detail: str
