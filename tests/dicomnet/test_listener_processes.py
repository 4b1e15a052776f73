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


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process *pid* holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_rows() -> list[tuple[int, int, str, str]]:
    """The kernel's TCP table: (local port, remote port, state, socket inode) per socket."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            rows.append((int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16), parts[3], parts[9]))
    return rows


def _server_connections(pid: int, port: int) -> int:
    """Established TCP connections on local *port* whose socket process *pid* holds."""
    inodes = _socket_inodes(pid)
    return sum(1 for local, _, state, inode in _tcp_rows() if local == port and state == "01" and inode in inodes)


def _spread(service: ListenerService) -> list[int]:
    port = service.settings.port
    pids = [os.getpid(), *(p.pid for p in service._children.values() if p.pid is not None)]
    return sorted(_server_connections(pid, port) for pid in pids)


def _instances(tmp_path: Path, seed: int, count: int) -> list:  # type: ignore[type-arg]
    """*count* MR instances of one generated series, read."""
    study = generate_mr_study(tmp_path / "study", seed=seed, series=("t1",), slices=count)
    return [dcmread(p) for p in study.files]


@pytest.fixture
def two_processes(make_settings):  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"processes": 2}))
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_associations_are_spread_evenly_over_the_listener_processes(two_processes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    datasets, service = _instances(tmp_path, seed=31, count=4), two_processes
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
    """Whether process *pid* holds the connection between *local_port* and *peer_port*."""
    inodes = _socket_inodes(pid)
    return any((local, remote) == (local_port, peer_port) and inode in inodes for local, remote, _, inode in _tcp_rows())


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
    datasets, service = _instances(tmp_path, seed=32, count=3), two_processes
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
