"""Study completeness by signal: a released association whose study holds what its applications need starts
at once; the quiet period stays the fallback. Real peers: DCMTK storescu and pynetdicom associations, the real
listener, router, classifier and routing rules (jobs are recorded, not run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from radnode.analyzers.registry import Registry
from radnode.listener.service import ListenerService
from radnode.routing.setup import build_router
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.store.studies import StudyRow
from radnode.synth.mr_study import GeneratedStudy, generate_mr_study
from tests.conftest import wait_until
from tests.support import dcmtk

QUIET = 60.0  # far longer than any test waits: a completion seen here came from the release signal


class Node:
    """Listener + assembly + router in one process, as ``radnode listen`` composes them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine, sessions = open_store(settings)
        self.router, _watcher = build_router(settings, sessions, Registry.from_settings(settings))
        self.service = ListenerService(settings, sink=self.router, store=(self.engine, sessions))

    def study(self, uid: str) -> StudyRow | None:
        with self.service.sessions() as s:
            row = s.get(StudyRow, uid)
            if row is not None:
                s.expunge(row)
            return row

    def jobs(self, uid: str) -> list[jobstore.JobRow]:
        with self.service.sessions() as s:
            rows = s.scalars(select(jobstore.JobRow).where(jobstore.JobRow.study_instance_uid == uid)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    def decisions(self, uid: str) -> list[int]:
        with self.service.sessions() as s:
            return sorted(s.scalars(select(jobstore.RoutingDecisionRow.generation).where(jobstore.RoutingDecisionRow.study_instance_uid == uid)).all())


@pytest.fixture
def node(make_settings) -> Iterator[Node]:  # type: ignore[no-untyped-def]
    settings = make_settings(
        quiet_seconds=QUIET,
        listener={"assembly_interval": 1.0, "extra_called_aes": [{"ae_title": "RADNODE_WAIT", "complete_on_release": False}]},
    )
    n = Node(settings)
    n.service.start()
    yield n
    n.service.stop()
    n.engine.dispose()


@pytest.fixture
def study(tmp_path: Path) -> GeneratedStudy:
    return generate_mr_study(tmp_path / "study", seed=3, rows=32, columns=32, slices=6)


def _send(node: Node, files: list[Path], called: str = "RADNODE") -> float:
    result = dcmtk.storescu("127.0.0.1", node.settings.port, files, called)
    assert result.returncode == 0 and not dcmtk.store_failures(result), result.stdout + result.stderr
    return time.time()


def _series_files(study: GeneratedStudy, *labels: str) -> list[Path]:
    return [f for label in labels for f in study.by_label(label).files]


def test_a_study_sent_in_one_association_starts_when_the_association_is_released(node: Node, study: GeneratedStudy) -> None:
    released = _send(node, study.files)
    row = wait_until(lambda: (r := node.study(study.study_instance_uid)) is not None and r.state == "complete" and r, timeout=QUIET / 4)
    assert row.completed_reason.startswith("association released; glioma: "), row.completed_reason
    assert "t1c 6 contiguous slices" in row.completed_reason and "flair 6 contiguous slices" in row.completed_reason
    jobs = wait_until(lambda: node.jobs(study.study_instance_uid), timeout=10)
    assert [j.application for j in jobs] == ["glioma"] and jobs[0].state == "queued"
    latency = jobs[0].created_at - released
    print(f"release -> job created: {latency:.2f} s (quiet period {QUIET:g} s)")
    assert latency < QUIET / 10  # signal-driven, not the timer


def test_required_series_over_two_associations_start_when_the_second_completes_them(node: Node, study: GeneratedStudy) -> None:
    _send(node, _series_files(study, "t1", "t2"))
    wait_until(lambda: (r := node.study(study.study_instance_uid)) is not None and r.released_at is not None, timeout=10)
    time.sleep(2.5)  # two assembly ticks: the check has run and said "not yet" (no t1c, no flair)
    first = node.study(study.study_instance_uid)
    assert first is not None and first.state == "receiving" and not node.jobs(study.study_instance_uid)
    _send(node, _series_files(study, "t1c", "flair"))
    row = wait_until(lambda: (r := node.study(study.study_instance_uid)) is not None and r.state == "complete" and r, timeout=QUIET / 4)
    assert row.completed_reason.startswith("association released; glioma: ")
    jobs = wait_until(lambda: node.jobs(study.study_instance_uid), timeout=10)
    assert row.generation == 1 and [j.application for j in jobs] == ["glioma"]


def test_an_instance_arriving_after_the_start_makes_an_update(node: Node, study: GeneratedStudy, tmp_path: Path) -> None:
    _send(node, study.files)
    wait_until(lambda: node.decisions(study.study_instance_uid) == [1], timeout=QUIET / 4)
    late = dcmread(study.by_label("t2").files[0])
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    late.save_as(tmp_path / "late.dcm")
    _send(node, [tmp_path / "late.dcm"])
    wait_until(lambda: node.decisions(study.study_instance_uid) == [1, 2], timeout=QUIET / 4)
    row = node.study(study.study_instance_uid)
    assert row is not None and row.generation == 2 and row.completed_reason.startswith("association released")


def test_a_gap_an_abort_or_an_opted_out_ae_title_waits_for_the_quiet_period(node: Node, study: GeneratedStudy, tmp_path: Path) -> None:
    # 1. a slice missing from the middle of the T1c: not whole
    t1c = study.by_label("t1c").files
    files = [f for f in study.files if f != t1c[len(t1c) // 2]]
    _send(node, files)
    # 2. the same kind of study to an AE title configured with complete_on_release: false
    other = generate_mr_study(tmp_path / "other", seed=4, rows=32, columns=32, slices=6)
    _send(node, other.files, called="RADNODE_WAIT")
    # 3. a whole study whose association is aborted, not released
    aborted = generate_mr_study(tmp_path / "aborted", seed=5, rows=32, columns=32, slices=6)
    ae = AE(ae_title="ABORTER")
    for f in aborted.files[:1]:
        ae.add_requested_context(dcmread(f).SOPClassUID)
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title="RADNODE")
    assert assoc.is_established
    for f in aborted.files:
        assert assoc.send_c_store(dcmread(f)).Status == 0x0000
    assoc.abort()
    wait_until(lambda: all(node.study(s.study_instance_uid) is not None for s in (study, other, aborted)), timeout=10)
    time.sleep(3.5)  # three assembly ticks
    for s in (study, other, aborted):
        row = node.study(s.study_instance_uid)
        assert row is not None and row.state == "receiving", (s.study_instance_uid, row.completed_reason if row else None)
        assert not node.jobs(s.study_instance_uid)
    assert node.study(study.study_instance_uid).released_at is not None  # type: ignore[union-attr]
    assert node.study(other.study_instance_uid).released_at is None  # type: ignore[union-attr]
    assert node.study(aborted.study_instance_uid).released_at is None  # type: ignore[union-attr]


def test_a_study_released_through_another_listener_process_starts_at_once(make_settings, study: GeneratedStudy) -> None:  # type: ignore[no-untyped-def]
    """With several listener processes, a release recorded by an extra one wakes the first one's study
    assembly: the start does not wait for the assembly interval (30 s here) or the quiet period."""
    import os

    from tests.dicomnet.test_listener_processes import _assoc, _holder_pid

    settings = make_settings(quiet_seconds=QUIET, listener={"processes": 2, "assembly_interval": 30.0})
    n = Node(settings)
    n.service.start()
    try:
        service = n.service
        held = [_assoc(settings.port)]  # occupy the first process, so the study goes through the other one
        if _holder_pid(service, held[0]) != os.getpid():
            held.append(_assoc(settings.port))
            held.pop(0).release()
            wait_until(lambda: sorted(service._shared.loads) == [0, 1], timeout=20)  # type: ignore[union-attr]
        sender = _assoc(settings.port)
        assert _holder_pid(service, sender) != os.getpid()
        assert all(sender.send_c_store(dcmread(f)).Status == 0 for f in study.files)
        sender.release()
        released = time.time()
        jobs = wait_until(lambda: n.jobs(study.study_instance_uid), timeout=QUIET / 4)
        assert [j.application for j in jobs] == ["glioma"]
        latency = jobs[0].created_at - released
        print(f"release through the second process -> job created: {latency:.2f} s")
        assert latency < 10  # signal-driven: neither the 30 s interval nor the 60 s quiet period
        for a in held:
            a.release()
    finally:
        n.service.stop()
        n.engine.dispose()
