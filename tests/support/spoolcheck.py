"""Shared checks for the spool's durability tests (group fsyncs and the journal)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from radnode.listener.spool import Spool


def in_four_threads(items: Sequence[Any], work: Callable[[Any], None]) -> None:
    """Run *work* on every item, the items dealt over four threads; raise the first error any thread met."""
    errors: list[BaseException] = []

    def run(part: Sequence[Any]) -> None:
        try:
            for item in part:
                work(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def failed_sync_leaves_nothing(spool: Spool, monkeypatch: pytest.MonkeyPatch, os_module: Any, call: str) -> None:
    """With ``os_module.<call>`` failing, a write raises and leaves nothing; afterwards the same path writes.

    The second write succeeding shows the first released the SOP claim it took.
    """
    def broken(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os_module, call, broken)
    rel = spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    with pytest.raises(OSError):
        spool.write(rel, b"data")
    assert not (spool.root / rel).exists()
    assert not list(spool.incoming.iterdir())
    monkeypatch.undo()
    assert spool.write(rel, b"data").read_bytes() == b"data"
