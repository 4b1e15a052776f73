"""The spool's write-ahead journal: what was appended survives a SIGKILL, nothing stale or torn is replayed.

Real files throughout; a crash is a child process killed with SIGKILL right
after its appends returned (no close, no checkpoint).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from radnode.listener import journal as journal_mod
from radnode.listener.journal import HEADER_SIZE, Journal, read_records, record_size
from radnode.listener.spool import Spool
from tests.support.spoolcheck import failed_sync_leaves_nothing, in_four_threads

ROOT = Path(__file__).resolve().parents[3]
SMALL = 256 * 1024  # segments that fill up: switches and checkpoints
ROOMY = 2 * 1024 * 1024  # segments a test's records fit in (journal-only records are lost to a checkpoint)

# Runs in a child: append the records (through the Journal alone, or through a Spool), then SIGKILL itself.
_CHILD = r"""
import json, os, random, signal, sys
from pathlib import Path
from radnode.listener.journal import Journal
from radnode.listener.spool import Spool

args = json.loads(sys.argv[1])
root = Path(args["root"])

def data(seed, size):
    return random.Random(seed).randbytes(size)

def journal():
    (root / ".incoming").mkdir(parents=True, exist_ok=True)
    return Journal(root, incoming=root / ".incoming", segment_size=args["segment"], max_age=args["max_age"])

for phase in args["phases"]:
    if phase["via"] == "spool":
        spool = Spool(root, journal=False)  # no checkpoint before the kill: a journal that never ages
        spool.journal = journal()
        for rel, seed, size in phase["records"]:
            spool.write(Path(rel), data(seed, size))
        j = spool.journal
    else:
        j = journal()
        for rel, seed, size in phase["records"]:
            assert j.append(rel, data(seed, size))
    if phase.get("close"):
        j.close()
print(json.dumps({"checkpoints": j.checkpoints}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _records(n: int, *, start: int = 0, size: int | None = None, series: str = "1.2.3.4") -> list[tuple[str, int, int]]:
    rng = random.Random(start)
    return [(f"1.2.3/{series}/1.2.3.4.{i}.dcm", i, size or rng.randint(1, 20_000)) for i in range(start, start + n)]


def _crash(root: Path, phases: list[dict], *, segment: int = ROOMY, max_age: float = 3600.0) -> dict:  # type: ignore[type-arg]
    """Run the phases in a child process that then dies by SIGKILL; return what it printed."""
    args = {"root": str(root), "segment": segment, "max_age": max_age, "phases": phases}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _open(root: Path, segment: int = ROOMY, **kw: float) -> Journal:
    (root / ".incoming").mkdir(parents=True, exist_ok=True)
    return Journal(root, incoming=root / ".incoming", segment_size=segment, **kw)


def _assert_stored(root: Path, records: list[tuple[str, int, int]]) -> None:
    for rel, seed, size in records:
        path = root / rel
        assert path.is_file(), f"{rel} missing"
        assert path.read_bytes() == _data(seed, size), f"{rel} differs"


def _dcm_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.dcm")}


def test_appended_records_are_written_into_the_spool_after_a_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    records = _records(40)
    _crash(root, [{"via": "journal", "records": records}])
    assert _dcm_files(root) == set()  # the child journaled them and died before placing the files
    j = _open(root)
    try:
        assert j.replayed == 40
        _assert_stored(root, records)
        assert not list((root / ".incoming").iterdir())
    finally:
        j.close()
    again = _open(root)  # replayed once: the segments were marked clean
    assert again.replayed == 0
    again.close()


def test_a_spool_replays_acknowledged_instances_whose_files_were_lost(tmp_path: Path) -> None:
    """Spool.write returned (acknowledged), the process died, the unsynced files are gone: a new Spool brings them back."""
    root = tmp_path / "spool"
    records = _records(30)
    _crash(root, [{"via": "spool", "records": records}])
    _assert_stored(root, records)  # placed, not fsync'ed
    for rel, _, _ in records:  # what a power cut may do to files nobody synced
        (root / rel).unlink()
    spool = Spool(root, segment_size=ROOMY)  # replays in the constructor, before any reconcile
    try:
        assert spool.journal is not None and spool.journal.replayed == 30
        _assert_stored(root, records)
        assert {p.relative_to(root).as_posix() for p in spool.iter_instances()} == {r for r, _, _ in records}
    finally:
        spool.close()


def test_replay_stops_at_a_corrupt_record(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    records = _records(5, size=3000)
    _crash(root, [{"via": "journal", "records": records}])
    seg = root / ".journal" / "slot-0" / "a.seg"  # the active segment of a fresh slot (lower generation)
    third = HEADER_SIZE + 2 * record_size(len(records[0][0].encode()), 3000)
    with open(seg, "r+b") as fh:  # flip a byte in the third record's data
        fh.seek(third + record_size(len(records[2][0].encode()), 0) + 1000)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    j = _open(root)
    j.close()
    assert j.replayed == 2
    assert _dcm_files(root) == {records[0][0], records[1][0]}
    _assert_stored(root, records[:2])


def test_records_of_an_earlier_generation_are_not_replayed(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    old = _records(6, size=2000)
    middle = _records(1, start=50, size=2000)
    new = _records(1, start=100, size=2000)  # same size: the record after it is an old one, intact
    # close() checkpoints: old records stay in a.seg, whole, but stale; the middle journal
    # uses b.seg; the last one a.seg again, writing over the first old record only.
    _crash(root, [
        {"via": "journal", "records": old, "close": True},
        {"via": "journal", "records": middle, "close": True},
        {"via": "journal", "records": new},
    ])
    raw = (root / ".journal" / "slot-0" / "a.seg").read_bytes()
    assert new[0][0].encode() in raw and old[0][0].encode() not in raw
    assert all(rel.encode() in raw for rel, _, _ in old[1:])  # still there after the new record
    j = _open(root)
    j.close()
    assert j.replayed == 1
    assert _dcm_files(root) == {new[0][0]}


def test_a_torn_segment_header_is_not_trusted_and_the_segment_is_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _crash(root, [{"via": "journal", "records": _records(3)}])
    seg = root / ".journal" / "slot-0" / "a.seg"
    with open(seg, "r+b") as fh:
        fh.write(b"\0" * 16)
    j = _open(root)
    try:
        assert j.replayed == 0  # checkpointed records are the only ones a header is rewritten over
        assert seg.read_bytes()[HEADER_SIZE:] == bytes(ROOMY - HEADER_SIZE)  # zeros: no stale record left
        assert j.append("1.2.3/1.2.3.4/9.dcm", b"x")
    finally:
        j.close()


def test_segments_switch_and_checkpoint_under_many_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_size=SMALL)
    assert spool.journal is not None
    records = _records(400, size=None)
    for rel, seed, size in records:
        spool.write(Path(rel), _data(seed, size))
    assert spool.journal.appended == 400 and spool.journal.checkpoints >= 10  # ~4 MB through 2 x 256 KiB
    assert spool.group.instances == 0  # none took the per-file fsync path
    _assert_stored(spool.root, records)
    spool.close()
    _assert_stored(spool.root, records)
    assert Spool(spool.root, segment_size=SMALL).journal.replayed == 0  # type: ignore[union-attr]


def test_many_appends_across_segment_switches_survive_a_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    records = _records(300)
    out = _crash(root, [{"via": "spool", "records": records}], segment=SMALL)
    assert out["checkpoints"] >= 5
    spool = Spool(root, segment_size=SMALL)
    try:
        assert 0 < spool.journal.replayed < 300  # type: ignore[union-attr]  # only the segments not yet checkpointed
        _assert_stored(root, records)
    finally:
        spool.close()


def test_the_time_bound_checkpoints_a_segment_that_is_not_full(tmp_path: Path) -> None:
    j = _open(tmp_path / "spool", max_age=0.05)
    try:
        assert j.append("1.2.3/1.2.3.4/1.dcm", b"data")
        deadline = threading.Event()
        for _ in range(100):
            if j.checkpoints:
                break
            deadline.wait(0.02)
        assert j.checkpoints == 1
    finally:
        j.close()


def test_two_journals_on_one_spool_take_different_slots(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    first, second = _open(root), _open(root)
    try:
        assert first.slot.name == "slot-0" and second.slot.name == "slot-1"
        assert first.append("1.2.3/1.2.3.4/1.dcm", b"one") and second.append("1.2.3/1.2.3.4/2.dcm", b"two")
    finally:
        first.close()
    third = _open(root)  # the lowest free slot again
    try:
        assert third.slot.name == "slot-0"
    finally:
        third.close()
        second.close()


def test_a_record_too_big_for_the_journal_takes_the_file_fsync_path(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_size=SMALL)
    assert spool.journal is not None
    big = random.Random(1).randbytes(spool.journal.max_record)  # with its header, over the bound
    assert not spool.journal.append("1.2.3/1.2.3.4/0.dcm", big)
    rel = spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert spool.write(rel, big).read_bytes() == big
    assert spool.group.instances == 1 and spool.journal.appended == 0
    spool.close()


def test_concurrent_appends_from_four_threads_are_all_durable(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    j = _open(root, segment=8 * 1024 * 1024, max_age=3600.0)
    records = _records(200, size=5000)

    def append(record: tuple[str, int, int]) -> None:
        assert j.append(record[0], _data(record[1], record[2]))

    in_four_threads(records, append)
    assert j.appended == 200 and j.rounds <= 200
    # Every record is in the active segment, whole and valid, before any checkpoint.
    active = j._active  # noqa: SLF001
    fd = os.open(active.path, os.O_RDONLY)
    try:
        found = dict(read_records(fd, active.generation, active.size))
    finally:
        os.close(fd)
    assert found == {rel: _data(seed, size) for rel, seed, size in records}
    j.close()


def test_concurrent_spool_writes_from_four_threads_across_switches(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_size=SMALL)
    records = _records(400)
    in_four_threads(records, lambda r: spool.write(Path(r[0]), _data(r[1], r[2])))
    assert spool.journal is not None and spool.journal.appended == 400 and spool.journal.checkpoints >= 5
    spool.close()
    _assert_stored(spool.root, records)


def test_a_failed_journal_sync_leaves_nothing_behind_and_releases_the_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", segment_size=SMALL)
    failed_sync_leaves_nothing(spool, monkeypatch, journal_mod.os, "fdatasync")
    # The failed segment took no more records: the second write went to the other segment.
    assert spool.journal is not None and spool.journal.appended == 2
    spool.close()


def test_a_closed_spool_still_writes_durably_without_its_journal(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_size=SMALL)
    spool.close()
    rel = spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert spool.write(rel, b"late").read_bytes() == b"late"
    assert spool.group.instances == 1


def test_no_journal_without_fsync(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    assert spool.journal is None and not (spool.root / ".journal").exists()


def test_a_journaled_copy_never_replays_over_a_later_copy_too_big_for_the_journal(tmp_path: Path) -> None:
    """Same path twice: first small (journaled), then too big for a record (fsync'ed on its own); then SIGKILL."""
    root = tmp_path / "spool"
    rel = "1.2.3/1.2.3.4/1.2.3.4.77.dcm"
    first, second = (rel, 1, 1_000), (rel, 2, 100_000)
    assert record_size(len(rel), second[2]) > (SMALL - HEADER_SIZE) // 4
    out = _crash(root, [{"via": "spool", "records": [first, second]}], segment=SMALL)
    assert out["checkpoints"] >= 1  # the small copy's segment was checkpointed before the big copy was written
    spool = Spool(root, segment_size=SMALL)
    try:
        assert spool.journal is not None and spool.journal.replayed == 0
        _assert_stored(root, [second])
    finally:
        spool.close()


def test_a_file_placed_after_the_answer_that_cannot_be_placed_stays_in_the_journal(tmp_path: Path) -> None:
    """The fast C-STORE path places files after answering; one that fails is replayed at the next start."""
    root = tmp_path / "spool"
    spool = Spool(root, segment_size=ROOMY)
    rel = spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    (root / "1.2.3").mkdir()
    (root / "1.2.3" / "1.2.3.4").write_bytes(b"a file where the series folder goes")
    later: list = []  # type: ignore[type-arg]
    assert spool.write(rel, b"payload", defer=later.append) == root / rel  # durable: answered
    assert len(later) == 1 and not (root / rel).exists()
    with pytest.raises(OSError):
        later[0]()  # placing fails (the folder cannot be made)
    assert spool.journal is not None and spool.journal.append("1.2.3/1.2.3.9/1.2.3.9.1.dcm", b"x") is False
    other = spool.relative_path("1.2.3", "1.2.3.8", "1.2.3.8.1")
    assert spool.write(other, b"next", defer=later.append).read_bytes() == b"next"  # per-file path, at once
    spool.close()  # a journal that keeps its records does not checkpoint them away
    (root / "1.2.3" / "1.2.3.4").unlink()
    again = Spool(root, segment_size=ROOMY)
    try:
        assert again.journal is not None and again.journal.replayed == 1
        assert (root / rel).read_bytes() == b"payload"
    finally:
        again.close()


def test_deferred_placing_survives_many_writes_across_segment_switches(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_size=SMALL)
    records = _records(120, size=9_000)
    later: list = []  # type: ignore[type-arg]
    for rel, seed, size in records:
        spool.write(Path(rel), _data(seed, size), defer=later.append)
        if len(later) >= 3:  # placed a little behind, as after each answer
            later.pop(0)()
    for work in later:
        work()
    assert spool.journal is not None and spool.journal.checkpoints >= 2
    spool.close()
    _assert_stored(spool.root, records)
