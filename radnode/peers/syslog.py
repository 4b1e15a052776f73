"""Audit entries forwarded as RFC 5424 syslog over TLS (RFC 5425) in the DICOM
audit message format (PS3.15 A.5), the IHE ATNA shape audit repositories
(dcm4chee's ARR, Splunk/ELK ATNA inputs) expect.

``radnode audit forward --host H --port 6514 --ca-file CA [--follow]`` sends
every entry after the last forwarded one (its id is kept in
``data_dir/audit_forwarded``), so a restart neither loses nor repeats entries.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

#: action prefix → (EventID code, meaning, EventActionCode, EventTypeCode or None) — PS3.15 A.5.3 / DCM codes.
_EVENTS: list[tuple[str, tuple[str, str, str, tuple[str, str] | None]]] = [
    ("logout", ("110114", "User Authentication", "E", ("110123", "Logout"))),
    ("login", ("110114", "User Authentication", "E", ("110122", "Login"))),
    ("user:", ("110113", "Security Alert", "E", ("110137", "User Security Attributes Changed"))),
    ("token:", ("110113", "Security Alert", "E", ("110137", "User Security Attributes Changed"))),
    ("routing", ("110113", "Security Alert", "E", ("110128", "Local Configuration"))),
    ("dicom:received", ("110104", "DICOM Instances Transferred", "C", None)),
    ("dicom:accepted", ("110100", "Application Activity", "E", None)),
    ("dicom:", ("110113", "Security Alert", "E", ("110127", "Node Authentication"))),
    ("result:viewed", ("110103", "DICOM Instances Accessed", "R", None)),
    ("audit:export", ("110106", "Export", "R", None)),
]
_FAILED = (":failed", ":throttled", ":locked", "dicom:rejected", "dicom:refused")


def event_codes(action: str) -> tuple[str, str, str, tuple[str, str] | None]:
    for prefix, codes in _EVENTS:
        if action.startswith(prefix):
            return codes
    return ("110100", "Application Activity", "E", None)


def audit_message(entry: dict[str, Any], source_id: str) -> str:
    """One PS3.15 A.5 AuditMessage (XML) for an exported audit entry."""
    code, meaning, action_code, type_code = event_codes(entry["action"])
    outcome = "4" if any(entry["action"].endswith(f) or entry["action"] == f for f in _FAILED) else "0"
    when = entry["time"]
    parts = [
        "<AuditMessage>",
        f"<EventIdentification EventActionCode={quoteattr(action_code)} EventDateTime={quoteattr(when)} EventOutcomeIndicator={quoteattr(outcome)}>",
        f"<EventID csd-code={quoteattr(code)} codeSystemName=\"DCM\" originalText={quoteattr(meaning)}/>",
    ]
    if type_code is not None:
        parts.append(f"<EventTypeCode csd-code={quoteattr(type_code[0])} codeSystemName=\"DCM\" originalText={quoteattr(type_code[1])}/>")
    parts.append(f"<EventOutcomeDescription>{_esc(entry['action'] + (': ' + entry['detail'] if entry.get('detail') else ''))}</EventOutcomeDescription>")
    parts.append("</EventIdentification>")
    source = entry.get("source")
    access = f" NetworkAccessPointID={quoteattr(source)} NetworkAccessPointTypeCode=\"2\"" if source else ""
    parts.append(f"<ActiveParticipant UserID={quoteattr(entry['actor'])} UserIsRequestor=\"true\"{access}/>")
    parts.append(f"<AuditSourceIdentification AuditSourceID={quoteattr(source_id)}/>")
    if entry.get("study_instance_uid"):
        parts.append(
            f"<ParticipantObjectIdentification ParticipantObjectID={quoteattr(entry['study_instance_uid'])} ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">"
            "<ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" originalText=\"Study Instance UID\"/></ParticipantObjectIdentification>"
        )
    parts.append("</AuditMessage>")
    return "".join(parts)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def syslog_frame(xml: str, hostname: str, when: str) -> bytes:
    """RFC 5424 message (facility authpriv, severity notice) with RFC 5425 octet-counting framing."""
    msg = f"<85>1 {when} {hostname} radnode - IHE+RFC-3881 - ".encode() + b"\xef\xbb\xbf" + xml.encode("utf-8")
    return str(len(msg)).encode() + b" " + msg


def forward(entries: Iterable[dict[str, Any]], host: str, port: int, context: ssl.SSLContext, *, source_id: str, timeout: float = 10.0) -> int | None:
    """Send *entries* over one TLS connection; return the last id sent (None if none)."""
    last: int | None = None
    hostname = socket.gethostname()
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            for entry in entries:
                tls.sendall(syslog_frame(audit_message(entry, source_id), hostname, entry["time"]))
                last = int(entry["id"])
    return last


def read_cursor(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def write_cursor(path: Path, last_id: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(last_id))
    tmp.replace(path)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
