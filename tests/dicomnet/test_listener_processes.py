"""Several listener processes on one port: associations spread evenly, a dead process is replaced.

Real processes and real sockets: which process holds a connection is read from
/proc (its file descriptors against the kernel's TCP table), not from radnode.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]
from pydicom.uid import ExplicitVRLittleEndian

from radnode.listener.balance import NOT_SERVING
from radnode.listener.service import ListenerService
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _assoc(port: int):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="SPREAD")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE")
    assert assoc.is_established
    return assoc


def _server_connections(pid: int, port: int) -> int:
    """Established TCP connections on local *port* whose socket process *pid* holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            if local_port == port and parts[3] == "01" and parts[9] in inodes:
                held += 1
    return held


def _spread(service: ListenerService) -> list[int]:
    port = service.settings.port
    pids = [os.getpid(), *(p.pid for p in service._children.values() if p.pid is not None)]
    return sorted(_server_connections(pid, port) for pid in pids)


@pytest.fixture
def two_processes(make_settings):  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"processes": 2}))
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_associations_are_spread_evenly_over_the_listener_processes(two_processes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = generate_mr_study(tmp_path / "study", seed=31, series=("t1",), slices=4)
    datasets = [dcmread(p) for p in study.files]
    service = two_processes
    assocs = [_assoc(service.settings.port) for _ in range(4)]
    try:
        # Each one stores through whichever process holds it.
        assert [a.send_c_store(ds).Status for a, ds in zip(assocs, datasets)] == [0, 0, 0, 0]
        assert _spread(service) == [2, 2]  # the kernel's SO_REUSEPORT hash often gave 3 and 1
    finally:
        for a in assocs:
            a.release()
    wait_until(lambda: _spread(service) == [0, 0] and list(service._shared.loads) == [0, 0], timeout=20)
    again = [_assoc(service.settings.port) for _ in range(2)]
    try:
        assert _spread(service) == [1, 1]
    finally:
        for a in again:
            a.release()


def _peer_port_held(pid: int, local_port: int, peer_port: int) -> bool:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if (int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16)) == (local_port, peer_port):
                if parts[9] in inodes:
                    return True
    return False


def _holder_pid(service: ListenerService, assoc) -> int:  # type: ignore[no-untyped-def]
    """The pid of the listener process that holds *assoc* (a pynetdicom requestor association)."""
    sock = assoc.dul.socket.socket
    peer_port = sock.getsockname()[1]
    pids = [os.getpid(), *(p.pid for p in service._children.values() if p.pid is not None)]
    for pid in pids:
        if _peer_port_held(pid, service.settings.port, peer_port):
            return pid
    raise AssertionError("no listener process holds the association")


def test_the_per_address_limit_holds_across_listener_processes(make_settings) -> None:  # type: ignore[no-untyped-def]
    """max_associations_per_host counts the connections every process holds, not one process's."""
    from tests.support import rawscu

    service = ListenerService(make_settings(listener={"processes": 2, "max_associations_per_host": 2}))
    service.start()
    try:
        held = [_assoc(service.settings.port) for _ in range(2)]
        try:
            assert _spread(service) == [1, 1]  # one in each process: each alone is under the limit
            third = rawscu.connect("127.0.0.1", service.settings.port)
            assert rawscu.is_closed(third, wait=5), "a third connection from the address was kept"
            third.close()
        finally:
            for a in held:
                a.release()
        wait_until(lambda: list(service._shared.loads) == [0, 0], timeout=20)
        again = _assoc(service.settings.port)  # the limit frees with the connections
        again.release()
    finally:
        service.stop()


def test_a_listener_process_that_dies_is_replaced_and_its_share_taken_meanwhile(two_processes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = generate_mr_study(tmp_path / "study", seed=32, series=("t1",), slices=3)
    datasets = [dcmread(p) for p in study.files]
    service = two_processes
    child = service._children[1]
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(10)
    # The first process serves alone at once (the dead one is never waited for).
    assoc = _assoc(service.settings.port)
    try:
        assert assoc.send_c_store(datasets[0]).Status == 0
    finally:
        assoc.release()
    # A new process takes the slot and serves its share again.
    wait_until(lambda: service._children[1].pid != child.pid and service._shared.loads[1] < NOT_SERVING, timeout=60)
    wait_until(lambda: list(service._shared.loads) == [0, 0], timeout=20)
    assocs = [_assoc(service.settings.port) for _ in range(2)]
    try:
        assert [a.send_c_store(ds).Status for a, ds in zip(assocs, datasets[1:])] == [0, 0]
        assert _spread(service) == [1, 1]
    finally:
        for a in assocs:
            a.release()


def _descendants(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_radnode_listen_uses_a_process_per_core_by_default_and_none_outlives_it(tmp_path: Path) -> None:
    """The default (`listener.processes: auto`) through the real command; a SIGKILLed node leaves no listener."""
    from radnode.settings import Settings
    from tests.conftest import ListenerProcess
    from tests.support.ports import free_port

    expected = Settings().listener.process_count()
    if expected < 2:
        pytest.skip("one CPU core: 'auto' is a single listener process here")
    lp = ListenerProcess(tmp_path / "data", free_port()).start()
    assert lp.proc is not None
    try:
        wait_until(lambda: "dicom listener serving" in lp.log.read_text(), timeout=60)
        assocs = [_assoc(lp.port) for _ in range(expected)]
        try:
            pids = [lp.proc.pid, *_descendants(lp.proc.pid)]
            held = sorted((_server_connections(pid, lp.port) for pid in pids), reverse=True)
            assert held[:expected] == [1] * expected and sum(held) == expected
        finally:
            for a in assocs:
                a.release()
        children = _descendants(lp.proc.pid)
        assert children
        lp.kill()
        wait_until(lambda: not any(Path(f"/proc/{c}").exists() and "Z" not in _state(c) for c in children), timeout=20)
        lp.start()  # binds the port again: nothing of the killed node holds it
        wait_until(lambda: lp.log.read_text().count("dicom listener serving") >= 2, timeout=60)
        assoc = _assoc(lp.port)
        assoc.release()
    finally:
        lp.stop()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_sigterm_while_the_listener_processes_start_stops_the_node_cleanly(tmp_path: Path) -> None:
    """The port opens before the extra processes serve; a SIGTERM in that window is a clean stop (exit 0)."""
    from tests.conftest import ListenerProcess
    from tests.support.ports import free_port

    lp = ListenerProcess(tmp_path / "data", free_port(), env={"RADNODE_LISTENER__PROCESSES": "3"}).start()
    assert lp.proc is not None
    children = _descendants(lp.proc.pid)
    lp.proc.terminate()
    assert lp.proc.wait(60) == 0, lp.log.read_text()[-2000:]
    assert "dicom listener stopped" in lp.log.read_text()
    wait_until(lambda: not any(Path(f"/proc/{c}").exists() and "Z" not in _state(c) for c in children), timeout=20)
