"""A job's per-destination deliveries, as people read them.

The dispatch stage records one outcome per destination on the job
(``sends_json``). This turns that record, plus the destinations the job was
routed to, into rows for the job page, ``radnode jobs show`` and metrics:
what kind of destination, where, the state (delivered, failed, skipped,
pending), when, how it was acknowledged (C-FIND confirmation, SMTP accept,
HL7 ACK, FHIR 2xx), and for ``notify`` destinations who was paged.
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
    if outcome.get("delivered") or (outcome.get("delivered") is None and not outcome.get("error")):
        return "delivered"
    return "failed"


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
    return {
        "name": name,
        "kind": kind,
        "label": label,
        "notify": notify,
        "state": delivery_state(outcome or None),
        "at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds") if isinstance(at, (int, float)) else None,
        "acknowledged": ack,
        "sent": outcome.get("sent", 0),
        "failed": len(outcome.get("failed") or {}),
        "attempts": outcome.get("attempts", 0),
        "error": outcome.get("error") or outcome.get("skipped") or "",
    }
