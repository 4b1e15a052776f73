"""structlog set-up for radnode's entry points.

Library modules only call ``structlog.get_logger(__name__)``; this module is
called once by the CLI. Output is JSON when stderr is not a terminal (for log
shippers) and readable when it is. Patient identifiers are dropped from every
event below debug level, whatever a caller passes, so that a careless log
call cannot leak them into central logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, MutableMapping

import structlog

#: Event keys that carry patient identity (PS3.15 Annex E basic profile
#: attributes most likely to reach a log). UIDs are not in this set.
PHI_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "birth_date",
        "accession",
        "accession_number",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "other_patient_ids",
    }
)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_phi(_logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Remove patient identifiers from any event logged above debug level."""
    if method_name != "debug":
        for key in PHI_KEYS.intersection(event_dict):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger once per process."""
    numeric = _LEVELS[level]
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            redact_phi,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries (pynetdicom, pika) log through stdlib logging.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
