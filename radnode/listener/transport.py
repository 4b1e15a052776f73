"""A transport that a hostile or broken peer cannot hold hostage.

pynetdicom's acceptor reads each PDU with a blocking ``recv`` (no deadline),
believes the PDU length a peer announces, counts association slots only
after a thread took the connection, and does the TLS handshake inside the
accept loop. A peer that sends a PDU header claiming 200 MB and then stays
silent therefore holds a slot for ever, and 16 of them stop the node. This
module closes those holes with pynetdicom's own extension points (no fork):

* :class:`GuardedServer` (a ``ThreadedAssociationServer``) checks the source
  address allow-list and the per-host connection limit in ``verify_request``,
  i.e. on accept, before any thread or slot is spent; a refused connection is
  closed at once. TLS sockets are wrapped without the handshake, which runs
  later in the connection's own thread under ``network_timeout``.
* :class:`GuardedSocket` (an ``AssociationSocket``) gives every read of one
  PDU (header and body together) one deadline of ``network_timeout``, refuses
  a PDU longer than ``max_pdu_size`` before reading its body, and counts the
  data-set bytes of each P-DATA message: past ``max_instance_bytes`` the rest
  of that data set is discarded as it arrives (memory stays bounded) and the
  C-STORE handler answers 0xA700 (``StoreStatus.TOO_LARGE``) when the message
  ends, so the association stays usable.
"""

from __future__ import annotations

import collections
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog
from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from radnode.listener.balance import AcceptBalance
from radnode.listener.faststore import install as serve_stores_on_dul_thread
from radnode.listener.reactor import adopt as event_driven

log = structlog.get_logger(__name__)

P_DATA_TF = 0x04
#: A-ASSOCIATE-RQ/AC/RJ, release and abort PDUs are small; this bounds them.
MAX_CONTROL_PDU = 1024 * 1024
#: Longest DIMSE command set accepted (real ones are under 1 KB).
MAX_COMMAND_BYTES = 64 * 1024
_HEADER = struct.Struct(">BBL")
_PDV_LENGTH = struct.Struct(">L")


class PduTooLarge(OSError):
    """A peer announced a PDU longer than radnode accepts."""


class ReadDeadline(TimeoutError):
    """A peer did not deliver a whole PDU within ``network_timeout``."""


@dataclass(frozen=True)
class Guard:
    """The limits one listener enforces on every connection."""

    network_timeout: float
    max_pdu_size: int
    max_instance_bytes: int
    max_per_host: int
    host_allowed: Callable[[str], bool]
    tls_context: ssl.SSLContext | None = None

    def max_pdu_length(self, pdu_type: int) -> int:
        if pdu_type == P_DATA_TF:
            # PS3.8 D.1: the maximum length applies to the variable field of
            # a P-DATA-TF PDU; a little slack for peers that count the header.
            return self.max_pdu_size + 16
        return max(MAX_CONTROL_PDU, self.max_pdu_size + 16)


class GuardedSocket(AssociationSocket):
    """An ``AssociationSocket`` whose reads have a deadline and a size bound.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved, length) and
    then ``recv(length)``. Here the header call reads the whole PDU (bounded,
    under one deadline), inspects it, and hands the bytes out to the two calls.
    """

    guard: Guard
    _pending: bytes | bytearray
    _timeout_now: float
    _msg_bytes: int
    _msg_truncated: bool
    _cmd_bytes: int
    #: One entry per completed data set, in arrival order: True when it was cut.
    oversized: collections.deque[bool]

    @classmethod
    def adopt(cls, sock: AssociationSocket, guard: Guard) -> "GuardedSocket":
        """Turn pynetdicom's socket wrapper into a guarded one, keeping its state."""
        new = cls.__new__(cls)
        new.__dict__.update(sock.__dict__)
        new.guard = guard
        new._pending = b""
        #: The timeout set on the socket now (the connection's code sets network_timeout first).
        new._timeout_now = guard.network_timeout
        new._msg_bytes = 0
        new._msg_truncated = False
        new._cmd_bytes = 0
        new.oversized = collections.deque()
        return new

    # -- reading --------------------------------------------------------

    def _read_exact(self, n: int, deadline: float) -> bytearray:
        sock = self.socket
        assert sock is not None
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        try:
            got = self._fill(sock, view, n, deadline)
        finally:
            if self._timeout_now != self.guard.network_timeout:
                sock.settimeout(self.guard.network_timeout)  # sends use the plain timeout
                self._timeout_now = self.guard.network_timeout
            del view
        if got < n:
            del buf[got:]
        return buf

    def _fill(self, sock: socket.socket, view: memoryview, n: int, deadline: float) -> int:
        """Read *n* bytes into *view* by *deadline* (at most ``_deadline_slack`` late).

        The socket's timeout is shortened only once the deadline is at least the slack nearer than
        the timeout already set: a settimeout per recv was a system call each (ioctl), about a dozen
        per image, each letting another thread take the interpreter lock (issue 18).
        """
        timeout_now = self._timeout_now
        slack = min(1.0, self.guard.network_timeout / 10)
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReadDeadline(f"peer sent {got} of {n} bytes within the network timeout")
            if remaining < timeout_now - slack:
                sock.settimeout(remaining)
                self._timeout_now = timeout_now = remaining
            try:
                k = sock.recv_into(view[got:], min(n - got, 1 << 20))
            except socket.timeout as exc:
                raise ReadDeadline(f"peer sent {got} of {n} bytes within the network timeout") from exc
            if k == 0:
                break  # closed: the DUL sees a short PDU and ends the connection
            got += k
        return got

    def recv(self, nr_bytes: int) -> bytearray:  # type: ignore[override]
        if self._pending:
            if nr_bytes >= len(self._pending):  # the DUL's body read: the whole PDU body, no copy
                out, self._pending = self._pending, b""
                return out if isinstance(out, bytearray) else bytearray(out)
            out, self._pending = self._pending[:nr_bytes], self._pending[nr_bytes:]
            return bytearray(out)
        if nr_bytes != _HEADER.size:
            # Not the DUL's header read (nothing else calls recv today); bounded anyway.
            return self._read_exact(nr_bytes, time.monotonic() + self.guard.network_timeout)
        deadline = time.monotonic() + self.guard.network_timeout
        try:
            header = self._read_exact(_HEADER.size, deadline)
            if len(header) < _HEADER.size:
                return header
            pdu_type, _, length = _HEADER.unpack(header)
            limit = self.guard.max_pdu_length(pdu_type)
            if length > limit:
                raise PduTooLarge(f"PDU of type 0x{pdu_type:02X} announces {length} bytes (limit {limit})")
            body: bytes | bytearray = self._read_exact(length, deadline)
        except OSError as exc:
            log.warning("connection dropped", reason=str(exc)[:200], host=self._peer_host())
            raise
        if pdu_type == P_DATA_TF and len(body) == length:
            try:
                body = self._account(body)
            except PduTooLarge as exc:
                log.warning("connection dropped", reason=str(exc), host=self._peer_host())
                raise
            header = bytearray(_HEADER.pack(pdu_type, 0, len(body)))
        self._pending = body
        return header

    def _account(self, body: bytes | bytearray) -> bytes | bytearray:
        """Count data-set bytes of the current message; drop those past the limit."""
        out: list[bytes | bytearray] | None = None
        offset = 0
        while offset + 6 <= len(body):
            (item_len,) = _PDV_LENGTH.unpack_from(body, offset)
            end = offset + 4 + item_len
            if item_len < 2 or end > len(body):
                return body  # malformed: let pynetdicom's decoder reject it
            control = body[offset + 5]
            is_dataset = not control & 0x01
            is_last = bool(control & 0x02)
            if is_dataset:
                self._msg_bytes += item_len - 2
                if self._msg_bytes > self.guard.max_instance_bytes:
                    if not self._msg_truncated:
                        log.warning(
                            "data set over the size limit; discarding the rest",
                            limit=self.guard.max_instance_bytes,
                            host=self._peer_host(),
                        )
                    self._msg_truncated = True
                    if out is None:
                        out = [body[:offset]]
                    # Keep the PDV (context, control byte) without its data.
                    out.append(_PDV_LENGTH.pack(2) + body[offset + 4 : offset + 6])
                elif out is not None:
                    out.append(body[offset:end])
                if is_last:
                    self.oversized.append(self._msg_truncated)
                    self._msg_bytes = 0
                    self._msg_truncated = False
            else:
                # A command set is a few hundred bytes; one fragmented without end would grow for ever.
                self._cmd_bytes += item_len - 2
                if self._cmd_bytes > MAX_COMMAND_BYTES:
                    raise PduTooLarge(f"command set longer than {MAX_COMMAND_BYTES} bytes")
                if is_last:
                    self._cmd_bytes = 0
                if out is not None:
                    out.append(body[offset:end])
            offset = end
        return body if out is None else b"".join(out)

    def take_oversized(self) -> bool:
        """Whether the oldest completed data set not yet answered was cut."""
        try:
            return self.oversized.popleft()
        except IndexError:
            return False

    def _peer_host(self) -> str:
        try:
            return str(self.assoc.requestor.address)
        except Exception:  # noqa: BLE001 - only for a log line
            return "?"


class GuardedRequestHandler(RequestHandler):
    """Finishes the TLS handshake under a deadline, then guards the socket."""

    server: "GuardedServer"

    def handle(self) -> None:
        host = str(self.client_address[0])
        released = False
        started = False
        try:
            sock = self.request
            guard = self.server.guard
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(guard.network_timeout)
                try:
                    sock.do_handshake()
                except (OSError, ValueError) as exc:
                    log.warning("connection dropped", reason="TLS handshake failed", error=str(exc)[:200], host=host)
                    self.server.notify_refused(host, "TLS handshake failed")
                    _close(sock)
                    return
            assoc = self._create_association()
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            # From pending to live atomically: verify_request counts both under this lock, and a
            # connection counted in neither or in both would let a 5th peer in or refuse a 4th.
            balance = self.server.balance
            if balance is not None:
                assoc.run = _counted(assoc.run, balance, host)  # type: ignore[method-assign]  # the count drops when it ends
            with self.server._pending_lock:
                assoc.start()
                started = True
                self.server.release_pending(host, locked=True)
                released = True
        finally:
            if not released:
                self.server.release_pending(host)
            if not started and self.server.balance is not None:
                self.server.balance.closed(host)

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assert assoc.dul.socket is not None  # set by RequestHandler._create_association
        assoc.dul.socket = GuardedSocket.adopt(assoc.dul.socket, self.server.guard)
        assoc = event_driven(assoc)  # no sleep-polling between PDUs and DIMSE messages (listener/reactor.py)
        serve_stores_on_dul_thread(assoc)  # plain C-STOREs without pynetdicom's DIMSE round trip (listener/faststore.py)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """An association server that checks who connects before spending a slot."""

    guard: Guard
    reuse_port = False
    #: Called with (host, reason) for each refused connection (audit).
    on_refused: Callable[[str, str], None] | None = None
    #: A listening socket another listener process made (several processes, one port): adopted, not bound.
    shared_socket: socket.socket | None = None
    #: With several listener processes: who takes the next connection (listener/balance.py).
    balance: AcceptBalance | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending: collections.Counter[str] = collections.Counter()
        self._pending_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.RequestHandlerClass = GuardedRequestHandler

    def server_bind(self) -> None:
        if self.shared_socket is not None:
            assert self.socket is not None
            self.socket.close()  # the unbound socket TCPServer made
            self.socket = self.shared_socket
            self.server_address = self.socket.getsockname()
        else:
            if self.reuse_port and self.socket is not None:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()
        if self.balance is not None:
            # Several processes accept from this socket: the one that loses a race must not block in accept.
            assert self.socket is not None
            self.socket.setblocking(False)

    def server_activate(self) -> None:
        if self.shared_socket is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        balance = self.balance
        if balance is not None and not balance.may_accept():
            raise BlockingIOError("a less busy listener process takes this connection")
        client, address = self.socket.accept()  # BlockingIOError (an OSError) when another process won
        host = str(address[0])
        if balance is not None:
            balance.opened(host)
        try:
            client.settimeout(self.guard.network_timeout)  # sends too: a peer that never reads
            if self.ssl_context:
                # The handshake runs in the connection's thread (GuardedRequestHandler),
                # never in the accept loop, where one silent peer would stop every accept.
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except OSError:
            self._uncount(host)
            _close(client)
            raise
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = str(client_address[0])
        if not self.guard.host_allowed(host):
            log.warning("connection refused", reason="source address not allowed", host=host)
            self.notify_refused(host, "source address not allowed")
            self._uncount(host)
            return False
        with self._pending_lock:
            if self.balance is not None:
                # Several listener processes: every process's connections from this address count,
                # this one's (already counted on accept) included.
                held = self.balance.connections_from(host) - 1
            else:
                held = sum(1 for a in self.active_associations if _assoc_host(a) == host) + self._pending[host]
            if held >= self.guard.max_per_host:
                log.warning("connection refused", reason="too many connections from this address", host=host, open=held)
                refused = True
            else:
                self._pending[host] += 1
                refused = False
        if refused:
            self.notify_refused(host, "too many connections from this address")
            self._uncount(host)
            return False
        return True

    def _uncount(self, host: str) -> None:
        if self.balance is not None:
            self.balance.closed(host)

    def release_pending(self, host: str, *, locked: bool = False) -> None:
        if not locked:
            with self._pending_lock:
                self.release_pending(host, locked=True)
            return
        self._pending[host] -= 1
        if self._pending[host] <= 0:
            del self._pending[host]

    def notify_refused(self, host: str, reason: str) -> None:
        if self.on_refused is not None:
            try:
                self.on_refused(host, reason)
            except Exception:  # noqa: BLE001 - auditing must not break the accept loop
                log.exception("audit of a refused connection failed")

    def connections_from(self, host: str) -> int:
        """Open associations from *host* (for tests and metrics)."""
        return sum(1 for a in self.active_associations if _assoc_host(a) == host)


def _counted(run: Callable[[], None], balance: AcceptBalance, host: str) -> Callable[[], None]:
    """*run* (an association thread's body) that tells *balance* when it ends, however it ends."""

    def counted_run() -> None:
        try:
            run()
        finally:
            balance.closed(host)

    return counted_run


def _assoc_host(assoc: Any) -> str | None:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001
        return None


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
