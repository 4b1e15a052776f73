"""Event-driven receive path for pynetdicom associations (no sleep-polling).

pynetdicom 3.0 runs two polling loops per association: the DUL thread
checks its socket and queues and, when nothing happened, sleeps
``_run_loop_delay`` (1 ms); the association thread sleeps ``0.001`` s
before every look at its DIMSE message queue. On a serial C-STORE stream
(the sender waits for each response) those sleeps sit on the critical path
twice per image: ~2 ms an image, more than radnode's own work (BENCHMARKS.md,
"What limits throughput").

This module keeps pynetdicom's PDU classes, state machine, DIMSE assembly
and association negotiation and only replaces the two waits:

* :class:`EventDrivenDUL` blocks in ``select`` on the peer's socket *and* a
  wake-up socketpair; a primitive queued for sending (``send_pdu`` from the
  association thread: a C-STORE response, a release, an abort) writes one
  byte to the pair and wakes it at once.
* :class:`EventDrivenAssociation` waits on a ``threading.Event`` that is set
  whenever the DUL hands something to the association (a complete DIMSE
  message, an A-RELEASE/A-ABORT primitive) or the DUL thread ends.

Both waits also have a short timeout (``_SAFETY_WAIT``) so that anything
that changes state without going through a queue (a flag set by
``Association.kill`` from another thread, the ARTIM and idle timers) is
still seen; it is a safety net, not the way data arrives.

The classes are applied to pynetdicom's objects when the association is
created (``adopt``), before its threads start, by
``GuardedRequestHandler._create_association``. This is a carried patch: when
pynetdicom's reactors become event-driven upstream, drop it.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

import structlog
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

log = structlog.get_logger(__name__)

#: Longest a reactor blocks without an event (timers, kill flags set without a wake-up).
_SAFETY_WAIT = 0.05


class _SignalQueue(queue.Queue):  # type: ignore[type-arg]
    """A ``queue.Queue`` that calls *notify* after every ``put`` (wakes the consumer's reactor)."""

    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _Waker:
    """A socketpair whose read end a ``select`` can wait on; ``wake`` is safe from any thread, also after close.

    A socket object (not a raw fd from ``os.pipe``) so that a write after close fails on
    the object instead of landing on a reused descriptor number.
    """

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)

    def wake(self) -> None:
        try:
            self.w.send(b"\0")
        except OSError:  # full (a wake-up is already pending) or closed (reactor ended)
            pass

    def drain(self) -> None:
        try:
            while self.r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.r.close()
        self.w.close()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL with the poll-and-sleep replaced by a blocking ``select``."""

    _waker: _Waker

    def wake(self) -> None:
        self._waker.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """As pynetdicom's, but joins the thread instead of sleep-polling ``is_alive``."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
            if threading.current_thread() is not self and self.ident is not None:
                self.join()
            return True
        return False

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """As pynetdicom's, but a blocking wait ends as soon as the peer has gone.

        The acceptor waits up to ``acse_timeout`` for the A-ASSOCIATE-RQ; a peer that connects
        and closes without sending one (a TCP health probe, a port scan) otherwise holds an
        association slot of its host for that long (30 s) and can make the next real
        association be refused (``max_associations_per_host``).
        """
        if not wait:
            return super().receive_pdu(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = _SAFETY_WAIT if deadline is None else max(0.0, min(_SAFETY_WAIT, deadline - time.monotonic()))
            primitive = super().receive_pdu(wait=True, timeout=step)
            if primitive is not None:
                return primitive
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if self._peer_gone():
                return super().receive_pdu(wait=False)

    def _peer_gone(self) -> bool:
        """Back in Sta1 (idle, no connection) after having left it: the connection ended (PS3.8 9.2)."""
        return getattr(self, "_left_sta1", False) and self.state_machine.current_state == "Sta1"

    def _wait(self) -> None:
        """Block until the socket is readable, a primitive was queued, or a timer may have expired."""
        timeout = _SAFETY_WAIT
        if self.artim_timer._start_time is not None and self.artim_timer.timeout is not None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        fds: list[Any] = [self._waker.r]
        sock = self.socket.socket if self.socket is not None else None
        if sock is not None and self.socket._is_connected and sock.fileno() >= 0:  # type: ignore[union-attr]
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already buffered: select would not see them
            fds.append(sock)
        try:
            select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            pass  # the socket closed under us; the next loop's read reports it (Evt17)
        self._waker.drain()

    def _abort_broken(self) -> None:
        """Send an A-ABORT (service provider) and end the association, as pynetdicom does on a failed read."""
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        try:
            assert self.socket is not None
            self.socket.send(abort_pdu.encode())
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

    def run_reactor(self) -> None:
        """pynetdicom's ``DULServiceProvider.run_reactor`` with ``time.sleep`` replaced by :meth:`_wait`."""
        self._idle_timer.start()
        assert self.socket is not None
        idle = False
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if idle and not self.to_provider_queue.queue:
                    self._wait()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:  # as pynetdicom: bypass the state machine and abort
                    self._abort_broken()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue
                try:
                    self.state_machine.do_action(event)
                except Exception as exc:  # noqa: BLE001 - e.g. a command set pynetdicom cannot decode
                    # pynetdicom let this end the thread with a traceback; the peer is aborted the same way.
                    log.warning("association aborted: message could not be handled", error=str(exc)[:200])
                    self._abort_broken()
                    return
                if self.state_machine.current_state != "Sta1":
                    self._left_sta1 = True
                idle = False
        finally:
            self._waker.close()
            notify = getattr(self.assoc, "notify", None)
            if notify is not None:
                notify()  # the association reactor checks dul.is_alive()


class EventDrivenAssociation(Association):
    """An acceptor ``Association`` whose reactor waits on an event instead of ``time.sleep(0.001)``."""

    _wakeup: threading.Event

    def notify(self) -> None:
        self._wakeup.set()

    def kill(self) -> None:
        self._wakeup.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom's ``Association._run_reactor`` (acceptor loop), event-driven."""
        from pynetdicom import evt

        self._is_paused = False
        wakeup = self._wakeup
        while not self._kill:
            wakeup.wait(_SAFETY_WAIT)
            wakeup.clear()  # anything put after this sets it again: no lost wake-up

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            # Serve every complete message already queued before looking at ACSE state
            while not self._kill:
                context_id, msg = self.dimse.get_msg(block=False)
                if not msg:
                    break
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def adopt(assoc: Association) -> Association:
    """Make a freshly created acceptor association and its DUL event-driven (before ``start``)."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("adopt() must run before the association's threads start")
    assoc.__class__ = EventDrivenAssociation
    assoc._wakeup = threading.Event()  # type: ignore[attr-defined]
    dul = assoc.dul
    dul.__class__ = EventDrivenDUL
    dul._waker = _Waker()  # type: ignore[attr-defined]
    dul._target = make_target(dul.run_reactor)  # type: ignore[attr-defined] - Thread bound the old method at init
    notify = assoc.notify  # type: ignore[attr-defined]
    dul.to_provider_queue = _signalling(dul.to_provider_queue, dul.wake)  # type: ignore[attr-defined]
    dul.to_user_queue = _signalling(dul.to_user_queue, notify)
    assoc.dimse.msg_queue = _signalling(assoc.dimse.msg_queue, notify)
    return assoc


def _signalling(old: "queue.Queue[Any]", notify: Any) -> _SignalQueue:
    """A signalling queue holding whatever *old* already held (nothing, normally)."""
    new = _SignalQueue(notify)
    while True:
        try:
            new.put_nowait(old.get_nowait())
        except queue.Empty:
            return new
