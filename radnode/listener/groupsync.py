"""Group commit for the spool: instances that arrive together share their directory fsyncs.

This is the spool's slow durable path: for an instance too big for the
write-ahead journal (``journal.py``), for a spool opened without one, and
when the journal failed. Each C-STORE may be acknowledged only once its file
is durable: the file's data fsync'ed, then renamed into place, then the
directory fsync'ed — all three done when ``commit`` returns. On
this class of disk one fsync costs 1-5 ms, far more than everything else
radnode does per image (BENCHMARKS.md), and each association sends its next
image only after the answer, so per-association batching is impossible.
Across associations it is not: while one thread is inside its fsyncs the
others' instances queue up, and the next round syncs all of them, with one
``fsync`` per distinct directory (a series folder holds them all) instead
of one per instance — and on ext4 the first file fsync commits the journal
for the rest, so their own fsyncs return quickly.

No thread and no timer: the thread that finds the lock free leads a round
for everything queued so far (its own instance included); the others wait
on the lock and either find their instance done by that round or lead the
next. A lone association therefore pays nothing extra. Every instance's
``commit`` returns only after the round that holds it finished its
directory fsync — nothing is answered before it is on disk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar


class _Settled(Protocol):
    done: bool
    error: BaseException | None


T = TypeVar("T", bound=_Settled)


class Rounds(Generic[T]):
    """Leader/follower batching: whoever finds the round free runs *run* on everything queued so far.

    No thread and no timer; ``wait`` returns once a round holding the item has
    run (which set its ``done``) and raises the ``error`` that round gave it.
    Used for the spool's fsync rounds (below) and the journal's fdatasyncs.
    """

    def __init__(self, run: Callable[[list[T]], None]) -> None:
        self._run = run
        self._round = threading.Lock()  # held by the thread running a round
        self._queue_lock = threading.Lock()
        self._queue: list[T] = []

    def add(self, item: T) -> None:
        with self._queue_lock:
            self._queue.append(item)

    def wait(self, item: T) -> None:
        with self._round:
            if not item.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run(batch)
        if item.error is not None:
            raise item.error


@dataclass(eq=False)
class Pending:
    """A written, not yet durable instance: its open temp file and where it goes."""

    fd: int
    tmp: Path
    final: Path
    done: bool = False
    error: BaseException | None = None
    renamed: bool = field(default=False)


class GroupSync:
    """Makes ``Pending`` instances durable in rounds (see the module docstring)."""

    def __init__(self) -> None:
        self._rounds: Rounds[Pending] = Rounds(self._run)
        #: Statistics for the benchmark: rounds run and instances they made durable.
        self.rounds = 0
        self.instances = 0

    def commit(self, item: Pending) -> None:
        """Return once *item* is durable at ``item.final``; raise its OSError otherwise.

        The caller keeps ownership of nothing: ``item.fd`` is closed here either way.
        """
        self._rounds.add(item)
        self._rounds.wait(item)

    def _run(self, batch: list[Pending]) -> None:
        self.rounds += 1
        self.instances += len(batch)
        dirs: dict[Path, list[Pending]] = {}
        for item in batch:
            try:
                os.fsync(item.fd)
                os.replace(item.tmp, item.final)
                item.renamed = True
                dirs.setdefault(item.final.parent, []).append(item)
            except OSError as exc:
                item.error = exc
            finally:
                _close(item.fd)
        for folder, items in dirs.items():
            try:
                fsync_dir(folder)
            except OSError as exc:
                for item in items:
                    item.error = exc
        for item in batch:
            item.done = True


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
