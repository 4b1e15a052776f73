"""The connectivity page's check: C-ECHO each configured peer.

A failure reads exactly as it would on a pull or a result send: the sentence
comes from the one diagnosis table in :mod:`radnode.peers.dicom`.
"""

from __future__ import annotations

from typing import Any

from radnode.peers.dicom import Remote, echo
from radnode.settings import DicomPeer, Settings


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
