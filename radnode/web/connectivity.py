"""The connectivity checks (page and API): C-ECHO each configured peer; test each result destination.

A failure reads exactly as it would on a pull or a result send: the sentence
comes from the one diagnosis table in :mod:`radnode.peers.dicom`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from radnode.peers.dicom import Remote, echo
from radnode.settings import DicomPeer, Settings
from radnode.store.jobs import record_event
from radnode.web.errors import ServiceError


def echo_peer(settings: Settings, peer: DicomPeer, timeout: float = 5.0) -> dict[str, Any]:
    """C-ECHO one peer; a failure reads as it would on a pull or a send (one diagnosis table)."""
    result = echo(Remote.for_peer(peer), settings.ae_title, timeout)
    return {
        "peer": peer.name,
        "ae_title": peer.ae_title,
        "host": peer.host,
        "port": peer.port,
        "ok": result.ok,
        "status": None if result.status is None else f"0x{result.status:04X}",
        "diagnosis": result.diagnosis,
        "ms": result.ms,
    }


def run_echo(settings: Settings, sessions: sessionmaker[Session], peer: str | None, actor: str) -> list[dict[str, Any]]:
    """C-ECHO one named peer (or all), audited with the acting user's name."""
    peers = [p for p in settings.peers if peer is None or p.name == peer]
    if peer is not None and not peers:
        raise ServiceError(404, f"no peer named {peer!r}")
    results = [echo_peer(settings, p) for p in peers]
    with sessions.begin() as s:
        record_event(s, actor, "connectivity:echo", detail=", ".join(f"{r['peer']}={'ok' if r['ok'] else 'failed'}" for r in results))
    return results
def check_destinations(settings: Settings, name: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Test each result destination of the routing file in force as a send would
    reach it: C-ECHO (DICOM), QIDO-RS (DICOMweb), EHLO/STARTTLS/AUTH (e-mail),
    an MLLP connection (HL7), ``GET [base]/metadata`` (FHIR).

    ``{email: referring}`` is tested as the SMTP server it would go through.
    """
    from radnode.analyzers.registry import Registry
    from radnode.peers.destinations import CallerIdentity, open_destination
    from radnode.routing.router import job_destination
    from radnode.routing.rules import load_rules
    from radnode.routing.setup import rules_path

    config = load_rules(rules_path(settings), Registry.from_settings(settings).declared_applications())
    delivery = settings.delivery.model_copy(
        update={
            "smtp": settings.delivery.smtp.model_copy(update={"timeout": min(settings.delivery.smtp.timeout, timeout)}),
            "hl7": settings.delivery.hl7.model_copy(update={"ack_timeout": min(settings.delivery.hl7.ack_timeout, timeout)}),
            "fhir": settings.delivery.fhir.model_copy(update={"timeout": min(settings.delivery.fhir.timeout, timeout)}),
        }
    )
    caller = CallerIdentity(ae_title=settings.ae_title, timeout=timeout, delivery=delivery, branding=settings.report, peers=tuple(settings.peers))
    out = []
    for dest_name, node in config.destinations.items():
        if name is not None and dest_name != name:
            continue
        dest = job_destination(dest_name, node)
        result = open_destination(dest, caller).check()
        out.append({"destination": dest_name, "kind": dest.kind, "label": dest.label, "ok": result.ok,
                    "status": None if result.status is None else str(result.status), "diagnosis": result.diagnosis, "ms": result.ms})
    if name is not None and not out:
        raise LookupError(f"no destination {name!r} in {rules_path(settings)}")
    return out


def run_destination_checks(settings: Settings, sessions: sessionmaker[Session], name: str | None, actor: str) -> list[dict[str, Any]]:
    """Check one named destination (or all) of the routing file in force, audited with the acting user's name."""
    from radnode.routing.rules import RoutingFileError

    try:
        checks = check_destinations(settings, name)
    except (LookupError, RoutingFileError) as exc:
        raise ServiceError(404, str(exc)) from exc
    with sessions.begin() as s:
        record_event(s, actor, "connectivity:destinations", detail=", ".join(f"{c['destination']}={'ok' if c['ok'] else 'failed'}" for c in checks))
    return checks
