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
from typing import Any, Protocol


class SharedCounts(Protocol):
    """An array of ints shared between processes (``multiprocessing.RawArray('i', n)``)."""

    def __getitem__(self, index: int) -> int: ...

    def __setitem__(self, index: int, value: int) -> None: ...

    def __len__(self) -> int: ...


#: The count of a process that does not serve (not started yet, or gone): never the least busy.
NOT_SERVING = 1 << 20


class AcceptBalance:
    """One process's view of the shared connection counts (its own slot is the only one it writes)."""

    #: A wait for a less busy process longer than this ends it: this process accepts after all
    #: (a live process takes a connection within milliseconds; a stalled one must not strand it).
    grace = 0.2
    #: A pending connection seen more than this long after the last one starts a new wait.
    episode = 1.0
    #: Pause between looks while another process is expected to accept.
    pause = 0.001

    def __init__(self, counts: SharedCounts, slot: int) -> None:
        if not 0 <= slot < len(counts):
            raise ValueError(f"slot {slot} outside the {len(counts)} listener processes")
        self.counts = counts
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

    def opened(self) -> None:
        """A connection was accepted by this process."""
        with self._lock:
            if self.counts[self.slot] < NOT_SERVING:
                self.counts[self.slot] = self.counts[self.slot] + 1

    def closed(self) -> None:
        """A connection of this process ended (its association thread finished, or it never started)."""
        with self._lock:
            if self.counts[self.slot] < NOT_SERVING:
                self.counts[self.slot] = max(self.counts[self.slot] - 1, 0)

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


def new_counts(ctx: Any, processes: int) -> SharedCounts:
    """A shared array for *processes* listener processes (from a multiprocessing context), none serving yet."""
    counts: SharedCounts = ctx.RawArray("i", processes)
    for slot in range(processes):
        counts[slot] = NOT_SERVING
    return counts
