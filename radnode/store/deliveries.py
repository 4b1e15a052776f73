"""A job's per-destination deliveries, as people read them.

The dispatch stage records one outcome per destination on the job
(``sends_json``). This turns that record, plus the destinations the job was
routed to, into rows for the job page, ``radnode jobs show`` and metrics:
what kind of destination, where, the state (delivered, failed, skipped,
pending), when, how it was acknowledged (C-FIND confirmation, SMTP accept,
HL7 ACK, FHIR 2xx), and for ``notify`` destinations who was paged.

An e-mail outcome may also carry ``bounces``: delivery status notifications
(RFC 3464) that came back after the SMTP server had accepted the message
(``radnode mail bounces``). A recipient that bounced (``Action: failed``)
makes the destination read as failed, here, on the job page and in the
``radnode_deliveries`` metric; a ``delayed`` notice is shown but changes
nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from radnode.model.jobs import Destination


def delivery_state(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return "pending"
    if outcome.get("skipped"):
        return "skipped"
    if bounced_recipients(outcome):
        return "failed"
    if outcome.get("delivered") or (outcome.get("delivered") is None and not outcome.get("error")):
        return "delivered"
    return "failed"


def bounced_recipients(outcome: dict[str, Any]) -> list[str]:
    """Recipients a later delivery status notification reported as failed."""
    out: list[str] = []
    for bounce in outcome.get("bounces") or []:
        if isinstance(bounce, dict) and bounce.get("action") == "failed" and bounce.get("recipient") not in out:
            out.append(str(bounce.get("recipient")))
    return out


def bounce_text(bounce: dict[str, Any]) -> str:
    """``gone@example.org bounced: 5.1.1 550 5.1.1 user unknown (mx.example.org)`` for people."""
    verb = "bounced" if bounce.get("action") == "failed" else str(bounce.get("action") or "reported")
    why = " ".join(str(bounce.get(k) or "") for k in ("status", "diagnostic")).strip()
    mta = f" ({bounce['reporting_mta']})" if bounce.get("reporting_mta") else ""
    return f"{bounce.get('recipient', '?')} {verb}: {why or 'no status given'}{mta}"


def job_deliveries(destinations_json: str, sends_json: str) -> list[dict[str, Any]]:
    """One row per destination of the job, in routing order (unknown leftovers last)."""
    sends: dict[str, Any] = json.loads(sends_json or "{}")
    rows = []
    seen = set()
    for raw in json.loads(destinations_json or "[]"):
        dest = Destination.model_validate(raw)
        seen.add(dest.name)
        rows.append(_row(dest.name, dest.kind, dest.label, dest.notify, sends.get(dest.name)))
    for name, outcome in sends.items():
        if name not in seen and isinstance(outcome, dict):
            rows.append(_row(name, str(outcome.get("kind", "dicom")), str(outcome.get("label", "")), bool(outcome.get("notify")), outcome))
    return rows


def _row(name: str, kind: str, label: str, notify: bool, outcome: dict[str, Any] | None) -> dict[str, Any]:
    outcome = outcome or {}
    at = outcome.get("at")
    if outcome.get("acknowledgement"):
        ack = str(outcome["acknowledgement"])
    elif outcome.get("confirmed") is True:
        ack = "confirmed by query"
    elif outcome.get("confirmed") is False:
        ack = "not confirmed"
    else:
        ack = ""
    bounces = [b for b in outcome.get("bounces") or [] if isinstance(b, dict)]
    bounced = bounced_recipients(outcome)
    refused = list(outcome.get("failed") or {})
    return {
        "name": name,
        "kind": kind,
        "label": label,
        "notify": notify,
        "state": delivery_state(outcome or None),
        "at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds") if isinstance(at, (int, float)) else None,
        "acknowledged": ack,
        "sent": outcome.get("sent", 0),
        "failed": len(refused) + len([r for r in bounced if r not in refused]),
        "attempts": outcome.get("attempts", 0),
        "error": outcome.get("error") or outcome.get("skipped") or "; ".join(bounce_text(b) for b in bounces if b.get("action") == "failed"),
        "bounced": [
            {
                "recipient": str(b.get("recipient", "")),
                "action": str(b.get("action", "")),
                "status": str(b.get("status", "")),
                "diagnostic": str(b.get("diagnostic", "")),
                "reporting_mta": str(b.get("reporting_mta", "")),
                "at": datetime.fromtimestamp(b["at"], timezone.utc).isoformat(timespec="seconds") if isinstance(b.get("at"), (int, float)) else None,
                "text": bounce_text(b),
            }
            for b in bounces
        ],
    }
