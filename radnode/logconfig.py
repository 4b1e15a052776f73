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


#: Longest string value a log line carries; a peer can send a 60,000-character UID.
MAX_VALUE_CHARS = 300


def truncate_long_values(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Cut any string value (the event text included) to MAX_VALUE_CHARS, saying how long it was."""
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS and key != "exception":
            event_dict[key] = f"{value[:MAX_VALUE_CHARS]}…[{len(value)} chars]"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger once per process.

    Lines from libraries that log through stdlib logging (pynetdicom, pika,
    uvicorn, alembic) go through the same processors and renderer, so a JSON
    log stays JSON from the first line to the last.
    """
    numeric = _LEVELS[level]
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact_phi,
        truncate_long_values,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging: same processors, same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_radnode", False) or isinstance(old, logging.StreamHandler) and old.stream in (sys.stderr, sys.stdout):
            root.removeHandler(old)
    handler._radnode = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
