"""The DICOM SCP: an AE with every storage SOP class and transfer syntax,
handlers bound with their dependencies, and a server socket that several
listener processes can share to use every core (listener/balance.py spreads
the connections over them).
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

import structlog
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom import _config as _pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from radnode.listener.handlers import (
    PeerPolicy,
    RecordSink,
    handle_accepted,
    handle_conn_open,
    handle_dimse_recv,
    handle_echo,
    handle_ended,
    handle_released,
    handle_requested,
    handle_store,
    store_limits,
)
from radnode.listener.balance import AcceptBalance
from radnode.listener.spool import Spool
from radnode.listener.transport import Guard, GuardedServer
from radnode.settings import Settings
from radnode.tls import server_context

log = structlog.get_logger(__name__)


#: Kept for callers that imported it; the guarded server also shares the port.
SharedPortServer = GuardedServer


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


def guard_for(settings: Settings) -> Guard:
    """The per-connection limits of ``settings.listener`` (see ``listener/transport.py``)."""
    lst = settings.listener
    tls = lst.tls
    ctx = None
    if tls is not None:
        ctx = server_context(tls.cert_file, tls.key_file, tls.ca_file, require_client_cert=tls.require_client_cert)
    return Guard(
        network_timeout=lst.network_timeout,
        max_pdu_size=lst.max_pdu_size,
        max_instance_bytes=lst.max_instance_bytes,
        max_per_host=lst.max_associations_per_host,
        host_allowed=peer_policy(settings).host_allowed,
        tls_context=ctx,
    )


def build_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class pynetdicom knows, as sent."""
    # pynetdicom's built-in PDU/DIMSE debug loggers run first among the
    # notification handlers and raise on hostile commands (a multi-valued UID),
    # which skips every handler after them, radnode's checks included. radnode
    # never shows pynetdicom's debug lines (logconfig), so they are off.
    _pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.listener.max_associations
    ae.maximum_pdu_size = settings.listener.max_pdu_size
    ae.network_timeout = settings.listener.network_timeout
    ae.acse_timeout = min(30.0, settings.listener.network_timeout)
    ae.dimse_timeout = settings.listener.network_timeout
    # Called AE titles are checked by handle_requested against the configured list.
    ae.require_called_aet = False
    syntaxes = list(AllTransferSyntaxes)
    ae.add_supported_context(Verification, syntaxes)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    return ae


def start_scp(
    settings: Settings,
    spool: Spool,
    sink: RecordSink,
    *,
    reuse_port: bool = False,
    audit: Any = None,
    shared_socket: Any = None,
    balance: AcceptBalance | None = None,
) -> tuple[AE, Any]:
    """Start the SCP in background threads; return the AE and its server.

    With several listener processes, the first one passes *balance* (its slot in
    the shared connection counts) and binds the port; the others pass the same
    and the first one's listening socket as *shared_socket*.
    """
    ae = build_ae(settings)
    if balance is not None:
        # listener.max_associations is the node's: each of the processes takes its share (connections are
        # spread evenly, so a process reaches its share only when the others have theirs).
        ae.maximum_associations = -(-settings.listener.max_associations // balance.shared.processes)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, handle_conn_open),
        (evt.EVT_REQUESTED, handle_requested, [peer_policy(settings), audit]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_DIMSE_RECV, handle_dimse_recv),
        (evt.EVT_ACCEPTED, handle_accepted, [audit]),
        (evt.EVT_RELEASED, handle_ended, [audit]),
        (evt.EVT_ABORTED, handle_ended, [audit]),
        (evt.EVT_C_STORE, handle_store, [spool, sink, settings.quiet_seconds_for, store_limits(settings)]),
        (evt.EVT_RELEASED, handle_released, [sink, settings.complete_on_release_for]),
    ]
    guard = guard_for(settings)

    def on_refused(host: str, reason: str) -> None:
        if audit is not None:
            from radnode.audit import AuditEntry

            audit.submit(AuditEntry(actor="?", action="dicom:refused", detail=reason, source=host))

    server_class = type("RadnodeServer", (GuardedServer,), {
        "reuse_port": reuse_port, "guard": guard, "on_refused": staticmethod(on_refused),
        "shared_socket": shared_socket, "balance": balance,
    })
    server = ae.make_server(
        (settings.listener.host, settings.port),
        ae_title=settings.ae_title,
        evt_handlers=handlers,
        server_class=server_class,
        ssl_context=guard.tls_context,
    )
    thread = threading.Thread(target=server.serve_forever, name="radnode-scp", daemon=True)
    thread.start()
    if balance is not None:
        balance.serving()
    ae._servers.append(server)  # so ae.shutdown() stops it
    log.info("dicom listener started", ae_title=settings.ae_title, port=settings.port, host=settings.listener.host, tls=guard.tls_context is not None)
    return ae, server
