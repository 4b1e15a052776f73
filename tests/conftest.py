"""Shared fixtures: real listeners on free loopback ports, real peers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom.config
import pytest

from radnode.listener.service import ListenerService
from radnode.settings import Settings
from tests.support.ports import free_port

pytest_plugins = ["tests.support.fixtures"]

#: Journal segment size of the suite's listeners (MiB; the default, 64, would fill the disk with test folders).
TEST_JOURNAL_MIB = 4

# Objects radnode writes must be valid; tests read them under strict checks.
pydicom.config.settings.reading_validation_mode = pydicom.config.WARN


def _live_children() -> dict[int, str]:
    """This process's live (not zombie) child processes: pid → command line."""
    me = str(os.getpid())
    out: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":
                out[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
    return out


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """Every process a test starts ends with the test, also when the test fails.

    Tests stop what they start (fixtures, ``finally``); this is the backstop. It runs after every other fixture
    of the test has been torn down, so what is still running then was leaked: it is killed (with its process
    group when it leads one) and reaped, and a warning names it.
    """
    before = set(_live_children())
    yield
    # Worker pools that libraries keep for the life of the process (multiprocessing, joblib/loky) are not leaks.
    pools = ("multiprocessing", "loky", "joblib", "resource_tracker")
    leaked = {pid: cmd for pid, cmd in _live_children().items() if pid not in before and not any(p in cmd for p in pools)}
    for pid, cmd in leaked.items():
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        import warnings

        warnings.warn(f"test leaked process {pid} ({cmd[:200]}); killed", stacklevel=1)


@pytest.fixture
def make_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build Settings for a listener on a free port under tmp_path."""

    def _make(**overrides) -> Settings:  # type: ignore[no-untyped-def]
        base = dict(data_dir=tmp_path / "data", port=free_port(), quiet_seconds=1.0)
        # Small journal segments: every listener of the suite writes its two segments full of zeros once.
        # One process: an in-process listener per test would otherwise spawn one more per core ("auto");
        # the default is exercised by the `radnode listen`/`serve` subprocess tests and the process tests.
        listener = {
            "assembly_interval": 0.2, "journal_segment_mib": TEST_JOURNAL_MIB, "processes": 1,
            **overrides.pop("listener", {}),
        }
        base.update(overrides)
        return Settings(listener=listener, **base)

    return _make


@pytest.fixture
def listener(make_settings) -> Iterator[ListenerService]:  # type: ignore[no-untyped-def]
    """An in-process listener with default settings (AE RADNODE)."""
    service = ListenerService(make_settings())
    service.start()
    yield service
    service.stop()


class ListenerProcess:
    """``radnode listen`` as a real subprocess (for kill/restart tests)."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log = data_dir.parent / f"listener-{port}.log"
        self.env = {
            **os.environ,
            "RADNODE_DATA_DIR": str(data_dir),
            "RADNODE_PORT": str(port),
            "RADNODE_QUIET_SECONDS": "1",
            "RADNODE_LISTENER__ASSEMBLY_INTERVAL": "0.2",
            "RADNODE_LISTENER__JOURNAL_SEGMENT_MIB": str(TEST_JOURNAL_MIB),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ListenerProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "radnode.cli", "listen"], env=self.env, stdout=log, stderr=log
            )
        wait_for_port(self.port, proc=self.proc, log=self.log)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def studies(self) -> list[dict]:  # type: ignore[type-arg]
        out = subprocess.run(
            [sys.executable, "-m", "radnode.cli", "studies", "--json"],
            env=self.env, capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text() if log else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def listener_process(tmp_path: Path) -> Iterator[ListenerProcess]:
    lp = ListenerProcess(tmp_path / "data", free_port())
    yield lp
    lp.stop()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll *predicate* until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def orthanc_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start real Orthanc test PACSes with given peers; stopped at teardown."""
    from tests.support.orthanc import OrthancServer

    servers: list[OrthancServer] = []

    def make(**kwargs) -> OrthancServer:  # type: ignore[no-untyped-def]
        kwargs.setdefault("fast_stop", True)  # per-test folder: no need for a graceful stop
        server = OrthancServer(tmp_path / f"orthanc{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()
