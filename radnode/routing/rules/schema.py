"""The routing file's schema: strict pydantic models (``extra="forbid"``
everywhere, so a misspelt key is an error, not an ignored condition)."""

from __future__ import annotations

import functools
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

#: The built-in destination: send results back to the AE that sent the study.
RETURN_TO_SENDER = "return_to_sender"


Trigger = Literal["auto", "manual", "pull"]


TRIGGERS: tuple[str, ...] = typing.get_args(Trigger)


def _as_list(value: Any) -> Any:
    """Let admins write ``calling_ae: PACS1`` for a one-element list."""
    if isinstance(value, str):
        return [value]
    return value


def _check_regex(value: str) -> str:
    """Compile at validation so a bad regex fails ``check``, not a study."""
    try:
        _compiled(value)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"invalid regular expression {value!r}: {exc.msg}{where}") from None
    return value


def _strip_upper(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip().upper() for v in values)


def _strip_all(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for v in values)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


Regex = Annotated[str, AfterValidator(_check_regex)]


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


Modalities = Annotated[
    tuple[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)], ...],
    BeforeValidator(_as_list),
    AfterValidator(_strip_upper),
]


AePatterns = Annotated[
    tuple[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)], ...],
    BeforeValidator(_as_list),
    AfterValidator(_strip_all),
]


Triggers = Annotated[tuple[Trigger, ...], BeforeValidator(_as_list)]


DestinationName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


DestinationNames = Annotated[tuple[DestinationName, ...], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    """Base: unknown keys are errors and parsed rules are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_email(value: str) -> str:
    if value != "referring" and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value):
        raise ValueError(f"{value!r} is not an e-mail address (or 'referring')")
    return value


EmailEntries = Annotated[
    tuple[Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_check_email)], ...],
    BeforeValidator(_as_list),
]


class DicomNode(_Strict):
    """A node results are sent to: a DICOM C-STORE SCP (``ae_title``, ``host``,
    ``port``), a DICOMweb service (``url``, stored by STOW-RS, PS3.18 10.5),
    e-mail recipients (``email``: addresses, or ``referring`` for the study's
    Referring Physician), an HL7 v2 receiver (``hl7: mllp://host:port``,
    ORU^R01), a FHIR server (``fhir: https://host/base``, transaction Bundle)
    or a webhook (``webhook: https://…``, a JSON POST without patient data)."""

    ae_title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)] | None = None
    host: NonEmpty | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    url: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$")] | None = None
    email: EmailEntries | None = None
    hl7: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^mllps?://[^\s/:]+:\d{1,5}/?$")] | None = None
    fhir: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$")] | None = None
    webhook: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$")] | None = None
    #: DICOM TLS (PS3.15 B.1) with ``delivery.dicom_tls``'s certificate files.
    tls: bool = False
    #: Outside the hospital: results leave de-identified (PS3.15 E.1) and come back re-identified.
    external: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> "DicomNode":
        dimse = [self.ae_title, self.host, self.port]
        others = [k for k in ("url", "email", "hl7", "fhir", "webhook") if getattr(self, k) is not None]
        if len(others) > 1:
            raise ValueError(f"a destination has one kind: give one of url, email, hl7, fhir, webhook (got {', '.join(others)})")
        if others:
            if any(v is not None for v in dimse):
                raise ValueError(f"a destination is either {others[0]} or ae_title/host/port, not both")
            for flag in ("tls", "external"):
                if getattr(self, flag):
                    raise ValueError(f"{flag}: true is for DICOM destinations (ae_title/host/port), not {others[0]}")
            if self.email is not None and not self.email:
                raise ValueError("email: give at least one address, or 'referring'")
        elif any(v is None for v in dimse):
            missing = [n for n, v in zip(("ae_title", "host", "port"), dimse) if v is None]
            raise ValueError(
                f"a DICOM destination needs ae_title, host and port (missing: {', '.join(missing)}), "
                "or give a DICOMweb url, email, hl7, fhir or webhook"
            )
        return self

    @property
    def is_dicomweb(self) -> bool:
        return self.url is not None


class Conditions(_Strict):
    """Study-level conditions; every condition given must hold (AND)."""

    modalities: Modalities | None = None
    modalities_all: Modalities | None = None
    study_description: Regex | None = None
    body_part: Regex | None = None
    institution: Regex | None = None
    calling_ae: AePatterns | None = None
    called_ae: AePatterns | None = None
    trigger: Triggers | None = None


class Match(Conditions):
    """Conditions plus ``not``: exclusions, any one of which rejects the rule."""

    exclude: Conditions | None = Field(default=None, alias="not")


class ApplicationRef(_Strict):
    """An application a rule asks for, with its per-rule options."""

    name: NonEmpty
    options: dict[str, Any] = Field(default_factory=dict)


def _app_shorthand(value: Any) -> Any:
    """Allow ``applications: [glioma]`` as shorthand for ``[{name: glioma}]``."""
    if isinstance(value, (list, tuple)):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class Rule(_Strict):
    """One routing rule.  ``stop=None`` means "inherit from defaults"."""

    name: NonEmpty
    description: str = ""
    enabled: bool = True
    priority: int = 0
    fallback: bool = False
    match: Match | None = None
    applications: Annotated[tuple[ApplicationRef, ...], BeforeValidator(_app_shorthand)] = ()
    destinations: DestinationNames | None = None
    #: Destinations that receive this rule's results only when a finding is critical.
    notify: DestinationNames = ()
    stop: bool | None = None
    #: Start as soon as the sender releases the association and the inputs look whole (default), or
    #: (false) always wait for the quiet period — e.g. for senders that split a study over associations.
    complete_on_release: bool = True


class Defaults(_Strict):
    """Values every rule inherits unless it sets its own."""

    destinations: DestinationNames = (RETURN_TO_SENDER,)
    multiple: bool = True


class RoutingConfig(_Strict):
    """A validated routing file.  Build it with :func:`load_rules`/:func:`parse_rules`."""

    version: Literal[1]
    defaults: Defaults = Field(default_factory=Defaults)
    destinations: dict[DestinationName, DicomNode] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: Any) -> Any:
        """Top-level ``x-...`` keys hold YAML anchors for reuse (as in
        docker-compose); they are not part of the schema."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return data

    def ordered_rules(self) -> list[Rule]:
        """Rules in evaluation order: priority descending, then file order."""
        return sorted(self.rules, key=lambda r: -r.priority)  # sort is stable

    def rule_stops(self, rule: Rule) -> bool:
        """Whether a matching ``rule`` ends evaluation (explicit or default)."""
        return rule.stop if rule.stop is not None else not self.defaults.multiple

    def rule_destinations(self, rule: Rule) -> tuple[str, ...]:
        """Destination names of ``rule`` after merging defaults."""
        return rule.destinations if rule.destinations is not None else self.defaults.destinations
