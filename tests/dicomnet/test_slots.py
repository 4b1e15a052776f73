"""The DICOM port cannot be held hostage (issue 14, acceptance 1 and 2).

Loopback has a whole /8: 127.0.0.1 plays the attacker and 127.0.0.2 the
legitimate modality, so "another address" is a real second source address.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from radnode.listener.service import ListenerService
from radnode.listener.status import StoreStatus
from tests.conftest import ListenerProcess, wait_until
from tests.support import dcmtk, rawscu
from tests.support.ports import free_port
from tests.support.rawscu import MR_STORAGE, RawAssociation, encode_dataset

ATTACKER, MODALITY = "127.0.0.1", "127.0.0.2"
TIMEOUT = 2.0


def _stall_pdata(port: int) -> rawscu.RawAssociation:
    """Associate, then start a P-DATA PDU (header + 100 bytes) and go silent."""
    assoc = RawAssociation(ATTACKER, port, source=ATTACKER)
    assoc.establish()
    assoc.sock.sendall(struct.pack(">BBL", 0x04, 0, 200_000) + b"\x00" * 100)
    return assoc


def _stall_associate(port: int) -> rawscu.RawAssociation:
    """Start an A-ASSOCIATE-RQ (header + 10 bytes) and go silent."""
    assoc = RawAssociation(ATTACKER, port, source=ATTACKER)
    assoc.sock.sendall(struct.pack(">BBL", 0x01, 0, 500) + b"\x00" * 10)
    return assoc


def _echo_from(host: str, port: int) -> int:
    assoc = RawAssociation("127.0.0.1", port, source=host, timeout=10)
    try:
        assert assoc.establish(), "association refused"
        return assoc.c_echo()
    finally:
        assoc.release()


@pytest.mark.parametrize("stall", [_stall_pdata, _stall_associate], ids=["half-read-pdata", "partial-associate-rq"])
def test_stalled_connections_from_one_address_do_not_stop_another(make_settings, stall) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"network_timeout": TIMEOUT, "max_associations": 16, "max_associations_per_host": 4}))
    service.start()
    port = service.settings.port
    stalled = []
    try:
        for _ in range(16):
            try:
                stalled.append(stall(port))
            except (ConnectionError, OSError):
                pass  # refused on accept: the per-host limit at work
        # Another address still gets its C-ECHO answered, by DCMTK too.
        assert _echo_from(MODALITY, port) == 0x0000
        # At most max_associations_per_host of the attacker's connections were taken in.
        open_now = [a for a in stalled if not rawscu.is_closed(a.sock, wait=0.05)]
        assert len(open_now) <= 4
        # And those are gone after network_timeout (the deadline covers a half-read PDU).
        for a in open_now:
            assert rawscu.is_closed(a.sock, wait=TIMEOUT + 10)
        server = service._ae._servers[0]
        wait_until(lambda: server.connections_from(ATTACKER) == 0, timeout=TIMEOUT + 10)
        assert dcmtk.echoscu("127.0.0.1", port, "RADNODE").returncode == 0
    finally:
        for a in stalled:
            a.close()
        service.stop()


def test_host_not_on_allow_list_is_refused_on_accept_and_takes_no_slot(make_settings) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(
        make_settings(listener={"network_timeout": 30.0, "allowed_hosts": [f"{MODALITY}/32"], "max_associations": 2})
    )
    service.start()
    port = service.settings.port
    socks = []
    try:
        for _ in range(16):
            s = rawscu.connect("127.0.0.1", port, source=ATTACKER)
            s.sendall(struct.pack(">BBL", 0x01, 0, 500) + b"\x00" * 10)
            socks.append(s)
        # Closed at once, long before the 30 s network timeout.
        assert all(rawscu.is_closed(s, wait=5) for s in socks)
        assert _echo_from(MODALITY, port) == 0x0000
    finally:
        for s in socks:
            s.close()
        service.stop()


def _bomb(sop_uid: str, inflated: int) -> bytes:
    from tests.dicomnet.test_hostile import mr

    head = encode_dataset(mr(sop_uid))
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [comp.compress(head + struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<L", inflated))]
    zeros = bytes(4 * 1024 * 1024)
    for _ in range(inflated // len(zeros)):
        out.append(comp.compress(zeros))
    out.append(comp.flush())
    return b"".join(out)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_decompression_bomb_is_refused_and_listener_memory_stays_bounded(tmp_path: Path) -> None:
    """A ~1 MB deflated C-STORE that inflates to 1 GiB, against `radnode listen` with default limits."""
    lp = ListenerProcess(tmp_path / "data", free_port()).start()
    try:
        bomb = _bomb("1.2.826.0.1.3680043.8.498.66.1", 1024**3)
        assert len(bomb) < 2 * 1024 * 1024
        assoc = RawAssociation("127.0.0.1", lp.port, contexts=[(1, MR_STORAGE, [DeflatedExplicitVRLittleEndian])], timeout=120)
        try:
            assert assoc.establish()
            status = assoc.c_store(bomb, sop_uid="1.2.826.0.1.3680043.8.498.66.1", ctx_id=1)
        finally:
            assoc.release()
        assert status == StoreStatus.TOO_LARGE
        assert lp.proc is not None
        peak = _peak_rss_mb(lp.proc.pid)
        print(f"listener peak RSS after the bomb: {peak:.0f} MB")  # reported in BENCHMARKS.md
        assert peak < 500
        assert _echo_from("127.0.0.1", lp.port) == 0x0000
        # Nothing of it stays on disk.
        assert not list((tmp_path / "data" / "spool").rglob("*.dcm"))
        assert not [p for p in (tmp_path / "data" / "spool" / ".incoming").iterdir()]
    finally:
        lp.stop()


def test_a_pdu_trickled_in_slowly_is_cut_off_at_the_deadline(make_settings) -> None:  # type: ignore[no-untyped-def]
    """The deadline covers the whole PDU however its bytes arrive: a peer that keeps sending a byte
    every 0.2 s (each recv returns long before the socket's timeout) is dropped once network_timeout
    has passed since the PDU began, not when its 200 KB PDU would be complete."""
    import time

    service = ListenerService(make_settings(listener={"network_timeout": TIMEOUT}))
    service.start()
    try:
        assoc = RawAssociation(ATTACKER, service.settings.port, source=ATTACKER)
        assert assoc.establish()
        assoc.sock.sendall(struct.pack(">BBL", 0x04, 0, 200_000))
        started = time.monotonic()
        dropped_after = None
        while time.monotonic() - started < TIMEOUT * 3:
            try:
                assoc.sock.sendall(b"\x00")
            except OSError:
                dropped_after = time.monotonic() - started
                break
            if rawscu.is_closed(assoc.sock, wait=0.2):
                dropped_after = time.monotonic() - started
                break
        assoc.sock.close()
        assert dropped_after is not None, "a trickling peer held its connection past three timeouts"
        assert TIMEOUT * 0.9 <= dropped_after <= TIMEOUT * 1.1 + 0.6, dropped_after
    finally:
        service.stop()
