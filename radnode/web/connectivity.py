"""The connectivity page's check: C-ECHO each configured peer.

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
