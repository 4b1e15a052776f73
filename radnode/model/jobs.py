"""The job contract: states, triggers and the versioned queue message.

Every message on the queue is an ``AnalyzeJob`` parsed with
``model_validate_json`` and nothing else; unknown fields are rejected so a
producer/consumer version mismatch fails loudly instead of half-working.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class JobState(str, enum.Enum):
    QUEUED = "queued"
    PREPROCESSING = "preprocessing"
    INFERRING = "inferring"
    WRITING = "writing"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    NEEDS_INPUT = "needs-input"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.NEEDS_INPUT, JobState.CANCELLED})
RUNNING_STATES = frozenset({JobState.PREPROCESSING, JobState.INFERRING, JobState.WRITING, JobState.SENDING})

#: Allowed transitions; anything else is a bug or a race and is refused.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PREPROCESSING, JobState.FAILED, JobState.CANCELLED, JobState.NEEDS_INPUT}),
    JobState.PREPROCESSING: frozenset({JobState.INFERRING, JobState.WRITING, JobState.QUEUED, JobState.FAILED, JobState.NEEDS_INPUT, JobState.CANCELLED, JobState.PREPROCESSING}),
    JobState.INFERRING: frozenset({JobState.WRITING, JobState.QUEUED, JobState.FAILED, JobState.NEEDS_INPUT, JobState.CANCELLED, JobState.PREPROCESSING}),
    JobState.WRITING: frozenset({JobState.SENDING, JobState.DONE, JobState.QUEUED, JobState.FAILED, JobState.CANCELLED, JobState.PREPROCESSING}),
    JobState.SENDING: frozenset({JobState.DONE, JobState.QUEUED, JobState.FAILED, JobState.CANCELLED, JobState.PREPROCESSING}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.NEEDS_INPUT: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.DONE: frozenset({JobState.QUEUED}),
}


#: Queue priority of a job: higher runs first (the AMQP message priority on
#: RabbitMQ; the embedded queue orders the same way). RabbitMQ fixes a queue's
#: number of levels when it is declared (``x-max-priority``) and cannot change
#: it later, so queues get room for MAX_PRIORITY levels once; radnode uses two
#: of them today and keeps one above urgent free.
MAX_PRIORITY = 5
ELECTIVE_PRIORITY = 0
URGENT_PRIORITY = 4


def is_urgent(priority: int) -> bool:
    """Whether a job of this priority is urgent work (shown as such)."""
    return priority >= URGENT_PRIORITY


class Trigger(str, enum.Enum):
    AUTO = "auto"
    MANUAL = "manual"
    PULL = "pull"


_OPTIONAL_FIELDS = ("email", "hl7", "fhir", "webhook", "notify", "tls", "external")


class Destination(BaseModel):
    """Where results go: a DICOM node (C-STORE), a DICOMweb service (STOW-RS,
    ``url``), e-mail recipients (``email``: addresses or ``referring``), an
    HL7 v2 receiver (``hl7``: ``mllp://host:port``) or a FHIR server
    (``fhir``: base URL) or a webhook (``webhook``: URL, JSON POST).

    ``notify`` marks a destination named under a rule's ``notify``: it
    receives only results with a critical finding. ``tls`` (DICOM kinds)
    associates over DICOM TLS with the files of ``delivery.dicom_tls``.
    ``external`` marks a service outside the hospital: what it receives is
    de-identified (PS3.15 E.1 basic profile, :mod:`radnode.deid`) and what it
    returns is re-identified before it goes on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ae_title: str = ""
    host: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = None
    email: tuple[str, ...] | None = None
    hl7: str | None = None
    fhir: str | None = None
    webhook: str | None = None
    notify: bool = False
    tls: bool = False
    external: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> "Destination":
        message_kinds = [k for k in ("url", "email", "hl7", "fhir", "webhook") if getattr(self, k) is not None]
        if len(message_kinds) > 1:
            raise ValueError(f"a destination has one kind, got {', '.join(message_kinds)}")
        if self.tls and message_kinds:
            raise ValueError("tls: true is for DICOM (ae_title/host/port) destinations; the others take TLS from their URL")
        if self.external and message_kinds:
            raise ValueError("external: true is for DICOM (ae_title/host/port) destinations (what leaves is de-identified DICOM)")
        if not message_kinds and not (self.ae_title and self.host and self.port):
            raise ValueError("a destination needs ae_title, host and port, a DICOMweb url, email, hl7, fhir or webhook")
        if self.email is not None and not self.email:
            raise ValueError("email: at least one address (or 'referring')")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        """Leave the message-kind fields out while unset: a DICOM or DICOMweb
        destination serialises exactly as before they existed, so stored jobs
        and queue messages stay readable by workers of the previous version."""
        data = handler(self)
        if isinstance(data, dict):
            for key in _OPTIONAL_FIELDS:
                if key in data and data[key] in (None, False):
                    del data[key]
        return data

    @property
    def kind(self) -> str:
        """Which sender handles it (``radnode.peers.destinations.KINDS``)."""
        for kind, value in (("dicomweb", self.url), ("email", self.email), ("hl7", self.hl7), ("fhir", self.fhir), ("webhook", self.webhook)):
            if value is not None:
                return kind
        return "dicom"

    @property
    def label(self) -> str:
        if self.email is not None:
            return "mailto:" + ",".join(self.email)
        for value in (self.url, self.hl7, self.fhir, self.webhook):
            if value:
                return value
        return f"{self.ae_title}@{self.host}:{self.port}"


class AnalyzeJob(BaseModel):
    """The message a worker receives: which analysis to run on which series."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    job_id: str = Field(min_length=16, max_length=64, pattern=r"^[0-9a-f]+$")
    study_instance_uid: str
    application: str
    model_version: str
    #: role → SeriesInstanceUID
    series: dict[str, str]
    options: dict[str, object] = Field(default_factory=dict)
    destinations: list[Destination] = Field(default_factory=list)
    trigger: Trigger = Trigger.AUTO
    #: Queue priority (``URGENT_PRIORITY`` for urgent applications). Absent in
    #: messages of earlier versions, which therefore parse as elective.
    priority: int = Field(default=ELECTIVE_PRIORITY, ge=0, le=MAX_PRIORITY)

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        """Leave ``priority`` out while elective: an elective job's message is
        byte for byte what the previous version wrote, so its workers (which
        reject unknown fields) still take it during a rolling upgrade."""
        data = handler(self)
        if isinstance(data, dict) and data.get("priority") == ELECTIVE_PRIORITY:
            del data["priority"]
        return data


def job_identity(study_instance_uid: str, application: str, model_version: str, series: dict[str, str]) -> str:
    """The same study, application, model version and inputs → the same job.

    A redelivered or re-routed request therefore maps onto the existing job
    (one result set), while changed input series make a new job.
    """
    parts = [study_instance_uid, application, model_version] + [f"{r}={series[r]}" for r in sorted(series)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
