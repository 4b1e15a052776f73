"""A DICOM peer that misbehaves on purpose, one way per test.

Why: the failure paths of every outbound conversation (pull, connectivity
check, result sending) must be seen to produce the diagnosis a human can act
on, and a real PACS cannot be asked to reject with reason (3, 2) or to hang.
This is a plain socket server speaking just enough of the DICOM Upper Layer
(PS3.8 9.3) to do the wrong thing:

- ``reject``: answers the A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ (result, source, reason);
- ``abort``: answers with an A-ABORT;
- ``silent``: accepts the TCP connection, reads the request, never answers;
- ``close``: reads the request and closes the connection.

:class:`MutePeer` is the one that associates properly and then never answers
a DIMSE request (a pynetdicom SCP whose handlers block).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification  # type: ignore[attr-defined]

from tests.support.ports import free_port

A_ASSOCIATE_RJ = 0x03
A_ABORT = 0x07


def _read_pdu(conn: socket.socket) -> bytes | None:
    """One PDU (6-byte header + body), or None when the peer closed first."""
    header = b""
    while len(header) < 6:
        chunk = conn.recv(6 - len(header))
        if not chunk:
            return None
        header += chunk
    (length,) = struct.unpack(">I", header[2:6])
    body = b""
    while len(body) < length:
        chunk = conn.recv(min(65536, length - len(body)))
        if not chunk:
            return None
        body += chunk
    return header + body


@dataclass
class MisbehavingPeer:
    """A listening socket on a free loopback port that fails in one scripted way."""

    mode: str
    result: int = 1
    source: int = 1
    reason: int = 1
    port: int = field(default_factory=free_port)
    #: Association requests seen (so a test can tell the peer was reached).
    requests: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _conns: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in {"reject", "abort", "silent", "close"}:
            raise ValueError(f"unknown mode {self.mode!r}")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name=f"misbehaving-peer-{self.mode}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            pdu = _read_pdu(conn)
            if pdu is None or pdu[0] != 0x01:  # not an A-ASSOCIATE-RQ
                return
            self.requests += 1
            if self.mode == "reject":
                conn.sendall(bytes([A_ASSOCIATE_RJ, 0]) + struct.pack(">I", 4) + bytes([0, self.result, self.source, self.reason]))
            elif self.mode == "abort":
                conn.sendall(bytes([A_ABORT, 0]) + struct.pack(">I", 4) + bytes([0, 0, 2, 0]))  # service provider, reason not specified
            elif self.mode == "close":
                conn.close()
                return
            self._stop.wait()  # "silent", and after a reply: keep the connection until the test ends
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass
        self._thread.join(timeout=5)


@contextmanager
def misbehaving_peer(mode: str, **kwargs: Any) -> Iterator[MisbehavingPeer]:
    peer = MisbehavingPeer(mode, **kwargs)
    try:
        yield peer
    finally:
        peer.close()


class MutePeer:
    """Accepts associations (C-ECHO, C-FIND, storage) and never answers a request."""

    def __init__(self, ae_title: str = "MUTEPACS") -> None:
        self.port = free_port()
        self.release = threading.Event()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 30

        def hang(_event: Any) -> int:
            self.release.wait(30)
            return 0xC000

        def hang_find(_event: Any) -> Iterator[tuple[int, Any]]:
            self.release.wait(30)
            yield 0xC000, None

        handlers = [(evt.EVT_C_ECHO, hang), (evt.EVT_C_STORE, hang), (evt.EVT_C_FIND, hang_find)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
