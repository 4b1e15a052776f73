"""Spread associations evenly over the listener processes that share one port.

Why: Python serves the associations of one process with one interpreter lock,
so four associations in one process cost about twice the CPU per image of one
(lock hand-offs between their threads, issue 18), and the kernel's
``SO_REUSEPORT`` hash, which picked a process per connection before, often put
three of four connections into one process while another sat idle.

Here every listener process accepts from the *same* listening socket (made
non-blocking, created by the first process and handed to the others). Each
process publishes how many connections it holds in a small shared array; a
process whose count is above the smallest one lets a new connection wait for a
less busy process, for at most ``grace`` seconds (a process that is stuck or
gone never strands a connection). Equal counts race for ``accept`` and the
kernel gives the connection to one of them. This is storescp's process per
association where there are as many processes as senders, and an even share
where there are more senders.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Protocol


class SharedCounts(Protocol):
    """An array of ints shared between processes (``multiprocessing.RawArray('i', n)``)."""

    def __getitem__(self, index: int) -> int: ...

    def __setitem__(self, index: int, value: int) -> None: ...

    def __len__(self) -> int: ...


#: The count of a process that does not serve (not started yet, or gone): never the least busy.
NOT_SERVING = 1 << 20
#: Source addresses are counted across processes in this many buckets per process (by CRC-32); two
#: addresses in one bucket (1 in 65536) share ``max_associations_per_host``.
HOST_BUCKETS = 1 << 16


@dataclass(frozen=True)
class Shared:
    """What the listener processes share: connections per process, and per source address and process.

    Each process writes only its own slot and its own row of ``hosts``, so no lock spans processes.
    """

    loads: SharedCounts
    hosts: SharedCounts

    @property
    def processes(self) -> int:
        return len(self.loads)


class AcceptBalance:
    """One process's view of the shared connection counts (its own slot is the only one it writes)."""

    #: A wait for a less busy process longer than this ends it: this process accepts after all
    #: (a live process takes a connection within milliseconds; a stalled one must not strand it).
    grace = 0.2
    #: A pending connection seen more than this long after the last one starts a new wait.
    episode = 1.0
    #: Pause between looks while another process is expected to accept.
    pause = 0.001

    def __init__(self, shared: Shared, slot: int) -> None:
        if not 0 <= slot < shared.processes:
            raise ValueError(f"slot {slot} outside the {shared.processes} listener processes")
        self.shared = shared
        self.counts = shared.loads
        self.slot = slot
        self._lock = threading.Lock()
        self._waiting_since: float | None = None

    # -- this process's count -------------------------------------------------------------

    def serving(self) -> None:
        """This process accepts connections from now on (its slot starts at NOT_SERVING)."""
        with self._lock:
            self.counts[self.slot] = 0

    def withdraw(self) -> None:
        """This process (or, called by the supervisor, a process that died) accepts no more."""
        with self._lock:
            self.counts[self.slot] = NOT_SERVING

    def forget_hosts(self) -> None:
        """Clear this slot's source-address counts (the supervisor, for a process that died with its connections)."""
        start = self.slot * HOST_BUCKETS
        with self._lock:
            self.shared.hosts[start : start + HOST_BUCKETS] = [0] * HOST_BUCKETS  # type: ignore[index,assignment]

    def opened(self, host: str) -> None:
        """A connection from *host* was accepted by this process."""
        cell = self._host_cell(host)
        with self._lock:
            if self.counts[self.slot] < NOT_SERVING:
                self.counts[self.slot] = self.counts[self.slot] + 1
            self.shared.hosts[cell] = self.shared.hosts[cell] + 1

    def closed(self, host: str) -> None:
        """A connection from *host* ended (its association thread finished, or it never started)."""
        cell = self._host_cell(host)
        with self._lock:
            if self.counts[self.slot] < NOT_SERVING:
                self.counts[self.slot] = max(self.counts[self.slot] - 1, 0)
            self.shared.hosts[cell] = max(self.shared.hosts[cell] - 1, 0)

    def connections_from(self, host: str) -> int:
        """Open connections from *host* in all listener processes (this one's just accepted included).

        Two processes accepting from one address at the same instant may each miss the other's
        newest connection: the limit can be passed by at most the number of processes minus one.
        """
        bucket = _bucket(host)
        hosts = self.shared.hosts
        return sum(hosts[slot * HOST_BUCKETS + bucket] for slot in range(self.shared.processes))

    def _host_cell(self, host: str) -> int:
        return self.slot * HOST_BUCKETS + _bucket(host)

    @property
    def held(self) -> int:
        return int(self.counts[self.slot])

    # -- the accept decision ---------------------------------------------------------------

    def least_busy(self) -> bool:
        """True when no other process holds fewer connections than this one."""
        mine = self.counts[self.slot]
        return all(mine <= self.counts[i] for i in range(len(self.counts)))

    def may_accept(self, now: float | None = None) -> bool:
        """Whether this process should take the connection that is waiting now.

        Called from the accept loop when the shared socket is readable; a False
        answer has already paused briefly, so the loop can simply look again.
        """
        if self.least_busy():
            self._waiting_since = None
            return True
        now = time.monotonic() if now is None else now
        since = self._waiting_since
        if since is None or now - since > self.episode:
            self._waiting_since = since = now
        if now - since >= self.grace:
            self._waiting_since = None
            return True
        time.sleep(self.pause)
        return False


def _bucket(host: str) -> int:
    return zlib.crc32(host.encode()) % HOST_BUCKETS


def new_shared(ctx: Any, processes: int) -> Shared:
    """The shared arrays for *processes* listener processes (from a multiprocessing context), none serving yet."""
    loads: SharedCounts = ctx.RawArray("i", processes)
    for slot in range(processes):
        loads[slot] = NOT_SERVING
    hosts: SharedCounts = ctx.RawArray("i", processes * HOST_BUCKETS)
    return Shared(loads=loads, hosts=hosts)
