"""The one place radnode builds TLS contexts (DICOM TLS, HTTPS).

PS3.15 B.9 (BCP 195 TLS secure transport profile) asks for TLS 1.2 or later;
both sides here refuse anything older. Every listener and every outbound
association (pull, result sending, connectivity checks — all opened by
:func:`radnode.peers.dicom.associate`) takes its context from here, so a
review has one module to read. This module imports nothing from radnode:
settings sections are read by attribute.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

MIN_VERSION = ssl.TLSVersion.TLSv1_2


def _check_file(name: str, path: Path | None) -> None:
    if path is not None and not Path(path).is_file():
        raise ValueError(f"{name}: no such file: {path}")


def server_context(
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None = None,
    *,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server-side context; with *require_client_cert*, peers must present a certificate signed by *ca_file*."""
    _check_file("cert_file", cert_file)
    _check_file("key_file", key_file)
    _check_file("ca_file", ca_file)
    if require_client_cert and ca_file is None:
        raise ValueError("require_client_cert needs ca_file (the CA that signs client certificates)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    *,
    verify_hostname: bool = False,
) -> ssl.SSLContext:
    """A client-side context: the peer is verified against *ca_file* (else the system store).

    DICOM peers are usually addressed by IP and their certificates rarely name
    it, so host-name checking is off unless asked for; the certificate chain
    is always verified.
    """
    _check_file("ca_file", ca_file)
    _check_file("cert_file", cert_file)
    _check_file("key_file", key_file)
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = MIN_VERSION
    ctx.check_hostname = verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def peer_context(tls: object | None) -> ssl.SSLContext | None:
    """The client context for a ``PeerTls`` section (``peers[].tls``, ``delivery.dicom_tls``); None: plain TCP."""
    if tls is None:
        return None
    return client_context(
        getattr(tls, "ca_file", None),
        getattr(tls, "cert_file", None),
        getattr(tls, "key_file", None),
        verify_hostname=bool(getattr(tls, "verify_hostname", False)),
    )


def peer_tls_args(peer: object, host: str) -> tuple[ssl.SSLContext, str] | None:
    """``tls_args`` for ``AE.associate`` towards a configured peer (None: plain TCP)."""
    ctx = peer_context(getattr(peer, "tls", None))
    return None if ctx is None else (ctx, host)


def uvicorn_ssl_kwargs(settings: object) -> dict[str, str]:
    """``ssl_certfile``/``ssl_keyfile`` for uvicorn when ``web.tls`` is set (HTTPS without a proxy)."""
    tls = getattr(getattr(settings, "web", None), "tls", None)
    if tls is None:
        return {}
    _check_file("web.tls.cert_file", tls.cert_file)
    _check_file("web.tls.key_file", tls.key_file)
    return {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}


def tls_for_node(settings: object, host: str | None, port: int, ae_title: str | None) -> tuple[ssl.SSLContext, str] | None:
    """``tls_args`` for a result destination: the TLS of the configured peer with that AE title, host and port."""
    peer = matching_peer(getattr(settings, "peers", []), host, port, ae_title)
    return None if peer is None else peer_tls_args(peer, peer.host)  # type: ignore[attr-defined]


def matching_peer(peers: Iterable[object], host: str | None, port: int | None, ae_title: str | None) -> object | None:
    """The configured peer (``settings.peers``) a destination names by AE title, host and port, if any."""
    for peer in peers:
        if getattr(peer, "host", None) == host and getattr(peer, "port", None) == port and getattr(peer, "ae_title", None) == ae_title:
            return peer
    return None
