"""SIGKILL during a 1000-instance send: every acknowledged instance is on disk, whole."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from radnode.synth.mr_study import generate_mr_study
from radnode.listener.spool import Spool
from tests.conftest import TEST_JOURNAL_MIB, ListenerProcess
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


def _send(port: int, datasets: list, acked: list[str], lock: threading.Lock) -> None:  # type: ignore[type-arg]
    ae = AE(ae_title="KILL1000")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE")
    if not assoc.is_established:
        return
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except Exception:  # noqa: BLE001 - the listener was killed
                return
            if getattr(status, "Status", None) != 0x0000:
                return  # no answer (killed) or a failure: not acknowledged
            with lock:
                acked.append(str(ds.SOPInstanceUID))
    finally:
        assoc.abort()


def test_sigkill_during_a_1000_instance_send_loses_nothing_acknowledged(tmp_path: Path) -> None:
    study = generate_mr_study(tmp_path / "study", seed=31, series=("t1", "t2", "flair", "t1c"), rows=64, columns=64, slices=250)
    datasets = [dcmread(p) for p in study.files]
    assert len(datasets) == 1000
    expected = {str(ds.SOPInstanceUID): ds.PixelData for ds in datasets}
    lp = ListenerProcess(tmp_path / "data", free_port()).start()
    acked: list[str] = []
    lock = threading.Lock()
    try:
        # Two associations at once, so that the kill can land inside a shared fsync round.
        senders = [threading.Thread(target=_send, args=(lp.port, datasets[i::2], acked, lock)) for i in range(2)]
        for t in senders:
            t.start()
        while True:
            with lock:
                if len(acked) >= 400:
                    break
            if not any(t.is_alive() for t in senders):
                break
            threading.Event().wait(0.005)
        lp.kill()  # SIGKILL mid-stream: responses and writes in flight
        for t in senders:
            t.join(30)
        assert 400 <= len(acked) < 1000
        spool = lp.data_dir / "spool"
        # What a restart does first: replay the journal. An instance is acknowledged once its journal record
        # is durable; its spool file is placed just after the answer, so the kill can land in between.
        Spool(spool, segment_size=TEST_JOURNAL_MIB * 1024 * 1024).close()
        stored = {p.stem: p for p in spool.rglob("*.dcm")}
        missing = [uid for uid in acked if uid not in stored]
        assert not missing, f"{len(missing)} acknowledged instance(s) missing after SIGKILL"
        for uid in acked:
            ds = dcmread(stored[uid])
            assert ds.PixelData == expected[uid], f"{uid} stored incomplete"
            assert ds.file_meta.SourceApplicationEntityTitle == "KILL1000"
    finally:
        lp.stop()
