"""The event-driven receive path (listener/reactor.py): slow peers, probes, idle CPU."""

from __future__ import annotations

import socket
import struct
import time

from pydicom import dcmread
from pathlib import Path

from radnode.listener.reactor import EventDrivenAssociation, EventDrivenDUL
from radnode.listener.service import ListenerService
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_until
from tests.support.rawscu import MR_STORAGE, RawAssociation, c_store_rq, encode_dataset


def _trickle(sock: socket.socket, data: bytes, piece: int, pause: float) -> None:
    for i in range(0, len(data), piece):
        sock.sendall(data[i : i + piece])
        time.sleep(pause)


def _pdata(ctx_id: int, data: bytes, *, command: bool) -> bytes:
    pdv = struct.pack(">LBB", len(data) + 2, ctx_id, 0x03 if command else 0x02) + data
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def test_a_peer_that_sends_its_pdus_in_slow_pieces_is_still_stored(listener: ListenerService, tmp_path: Path) -> None:
    study = generate_mr_study(tmp_path / "s", seed=5, series=("t1",), rows=32, columns=32, slices=2)
    assoc = RawAssociation("127.0.0.1", listener.settings.port)
    try:
        assert assoc.establish()
        for path in study.files:
            ds = dcmread(path)
            uid = str(ds.SOPInstanceUID)
            message = _pdata(3, c_store_rq(MR_STORAGE, uid), command=True) + _pdata(3, encode_dataset(ds), command=False)
            # Header bytes, PDU bodies and the gap between command and data set all arrive in pieces.
            _trickle(assoc.sock, message, piece=700, pause=0.01)
            assert assoc.read_status(timeout=10) == 0x0000
    finally:
        assoc.release()
    listener.flush()
    assert len(list((listener.spool.root).rglob("*.dcm"))) == len(study.files)


def test_associations_use_the_event_driven_reactors(listener: ListenerService) -> None:
    assoc = RawAssociation("127.0.0.1", listener.settings.port)
    try:
        assert assoc.establish()
        server = listener._ae._servers[0]
        live = wait_until(lambda: list(server.active_associations), timeout=5)
        assert all(isinstance(a, EventDrivenAssociation) and isinstance(a.dul, EventDrivenDUL) for a in live)
        assert assoc.c_echo() == 0x0000
    finally:
        assoc.release()


def test_a_connection_closed_before_its_association_request_frees_its_slot_at_once(listener: ListenerService) -> None:
    """A TCP probe (health check, port scan) must not hold a per-host slot for ``acse_timeout``.

    More probes than the per-host limit open and close; a real association from the same host is then
    accepted within 2 s (the probes' slots would otherwise be held for the 30 s ACSE timeout). The
    sender retries, as a modality does, because the server may not have accepted the probes yet when
    the first attempt arrives (then they still hold their slots for a few milliseconds).
    """
    for _ in range(listener.settings.listener.max_associations_per_host + 1):
        socket.create_connection(("127.0.0.1", listener.settings.port), timeout=5).close()
    t0 = time.monotonic()
    while True:
        assoc = RawAssociation("127.0.0.1", listener.settings.port)
        try:
            if assoc.establish():
                break
        except ConnectionError:
            pass
        assoc.close()
        assert time.monotonic() - t0 < 2.0, "the probes still hold the host's slots"
        time.sleep(0.05)
    try:
        assert assoc.c_echo() == 0x0000
    finally:
        assoc.release()
    server = listener._ae._servers[0]
    wait_until(lambda: not server._pending, timeout=5)
