"""The DICOM SCP: an AE with every storage SOP class and transfer syntax,
handlers bound with their dependencies, and a server socket that can be
shared by several listener processes (SO_REUSEPORT) to use every core.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

import structlog
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from radnode.listener.handlers import (
    PeerPolicy,
    RecordSink,
    handle_conn_open,
    handle_echo,
    handle_released,
    handle_requested,
    handle_store,
)
from radnode.listener.spool import Spool
from radnode.settings import Settings

log = structlog.get_logger(__name__)


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other processes may also bind."""

    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def peer_policy(settings: Settings) -> PeerPolicy:
    lst = settings.listener
    nets = None
    if lst.allowed_hosts is not None:
        nets = tuple(ipaddress.ip_network(h, strict=False) for h in lst.allowed_hosts)
    return PeerPolicy(
        called_aes=frozenset(c.ae_title for c in settings.called_aes()),
        allowed_calling_aes=frozenset(lst.allowed_calling_aes) if lst.allowed_calling_aes is not None else None,
        allowed_networks=nets,
    )


def build_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class pynetdicom knows, as sent."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.listener.max_associations
    ae.maximum_pdu_size = settings.listener.max_pdu_size
    ae.network_timeout = settings.listener.network_timeout
    ae.acse_timeout = 30
    ae.dimse_timeout = settings.listener.network_timeout
    # Called AE titles are checked by handle_requested against the configured list.
    ae.require_called_aet = False
    syntaxes = list(AllTransferSyntaxes)
    ae.add_supported_context(Verification, syntaxes)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    return ae


def start_scp(settings: Settings, spool: Spool, sink: RecordSink, *, reuse_port: bool = False) -> tuple[AE, Any]:
    """Start the SCP in background threads; return the AE and its server."""
    ae = build_ae(settings)
    handlers = [
        (evt.EVT_CONN_OPEN, handle_conn_open),
        (evt.EVT_REQUESTED, handle_requested, [peer_policy(settings)]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [spool, sink, settings.quiet_seconds_for]),
        (evt.EVT_RELEASED, handle_released, [sink, settings.complete_on_release_for]),
    ]
    server_class = type("RadnodeServer", (SharedPortServer,), {"reuse_port": reuse_port})
    server = ae.make_server(
        (settings.listener.host, settings.port),
        ae_title=settings.ae_title,
        evt_handlers=handlers,
        server_class=server_class,
    )
    thread = threading.Thread(target=server.serve_forever, name="radnode-scp", daemon=True)
    thread.start()
    ae._servers.append(server)  # so ae.shutdown() stops it
    log.info("dicom listener started", ae_title=settings.ae_title, port=settings.port, host=settings.listener.host)
    return ae, server
