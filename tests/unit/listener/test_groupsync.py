"""Group commit: an instance is never reported durable before its file and directory fsyncs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from radnode.listener import groupsync
from radnode.listener.groupsync import GroupSync, Pending
from radnode.listener.spool import Spool
from tests.support.spoolcheck import failed_sync_leaves_nothing


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Record fsyncs (slowed down, as on a busy disk) and renames in order."""
    events: list[tuple[str, object]] = []
    lock = threading.Lock()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        time.sleep(0.01)
        real_fsync(fd)
        with lock:
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def replace(src: Path, dst: Path) -> None:
        real_replace(src, dst)
        with lock:
            events.append(("replace", str(dst)))

    monkeypatch.setattr(groupsync.os, "fsync", fsync)
    monkeypatch.setattr(groupsync.os, "replace", replace)
    return events


def _commit_all(group: GroupSync, root: Path, n: int, acked: list[tuple[str, int]], journal: list) -> None:  # type: ignore[type-arg]
    (root / "inc").mkdir()
    (root / "series").mkdir()

    def one(i: int) -> None:
        tmp = root / "inc" / f"{i}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o640)
        os.write(fd, b"x" * 100)
        group.commit(Pending(fd, tmp, root / "series" / f"{i}.dcm"))
        acked.append((str(root / "series" / f"{i}.dcm"), len(journal)))  # what the journal held when answered

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_instances_share_rounds_and_none_is_acked_before_durable(tmp_path: Path, journal: list) -> None:  # type: ignore[type-arg]
    group = GroupSync()
    acked: list[tuple[str, int]] = []
    _commit_all(group, tmp_path, 8, acked, journal)
    assert len(acked) == 8
    assert group.instances == 8 and group.rounds < 8  # grouped
    folder = str(tmp_path / "series")
    for final, seen in acked:
        before = journal[:seen]
        replaced = [i for i, e in enumerate(before) if e == ("replace", final)]
        assert replaced, f"{final} answered before its rename"
        # the file's data was synced before the rename, the folder after it
        assert any(e[0] == "fsync" and str(e[1]).endswith(".part") for e in before[: replaced[0]])
        assert any(e == ("fsync", folder) for e in before[replaced[0] :]), f"{final} answered before its directory fsync"
    dir_syncs = sum(1 for e in journal if e == ("fsync", folder))
    assert dir_syncs == group.rounds < 8


def test_a_failed_fsync_is_reported_to_its_writer_and_nothing_is_placed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", journal=False)  # the per-file fsync path (test_journal.py: the journal's)
    failed_sync_leaves_nothing(spool, monkeypatch, groupsync.os, "fsync")
