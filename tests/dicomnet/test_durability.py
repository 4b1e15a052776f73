"""Nothing acknowledged is lost: a killed listener, a full disk, several processes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]
from pydicom.uid import ExplicitVRLittleEndian

from radnode.listener.service import ListenerService
from radnode.listener.status import StoreStatus
from radnode.synth.mr_study import generate_mr_study
from tests.conftest import ListenerProcess, wait_until
from tests.support import dcmtk
from tests.support.ports import free_port
from tests.support.require import unavailable


def _assoc(port: int):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="KILLTEST")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="RADNODE")


def test_killed_listener_keeps_every_acknowledged_instance_and_study_completes(tmp_path: Path) -> None:
    study = generate_mr_study(tmp_path / "study", seed=21, series=("t1", "t2", "flair"), slices=20)
    datasets = [dcmread(p) for p in study.files]
    lp = ListenerProcess(tmp_path / "data", free_port(), env={"RADNODE_QUIET_SECONDS": "2"}).start()
    try:
        acknowledged: list[str] = []
        assoc = _assoc(lp.port)
        assert assoc.is_established
        for i, ds in enumerate(datasets):
            if i == len(datasets) // 2:
                lp.kill()  # SIGKILL in the middle of the study: no clean shutdown
            try:
                status = assoc.send_c_store(ds)
            except Exception:
                break
            if getattr(status, "Status", None) == 0x0000:
                acknowledged.append(str(ds.SOPInstanceUID))
            else:
                break
        assoc.abort()
        assert 0 < len(acknowledged) < len(datasets)

        # Every acknowledged instance is on disk even before the restart.
        spooled = {p.stem for p in (lp.data_dir / "spool").rglob("*.dcm")}
        assert set(acknowledged) <= spooled

        lp.start()  # restart: the index is reconciled with the spool
        row = wait_until(lambda: [s for s in lp.studies() if s["state"] == "complete"], timeout=30)[0]
        assert row["study_instance_uid"] == study.study_instance_uid
        assert sum(s["instances"] for s in row["series"]) == len(spooled) >= len(acknowledged)

        # The rest of the study arrives after the restart: the study re-opens and completes again.
        res = dcmtk.storescu("127.0.0.1", lp.port, tmp_path / "study", "RADNODE")
        assert res.returncode == 0, res.stdout + res.stderr
        row = wait_until(
            lambda: [s for s in lp.studies() if s["state"] == "complete" and sum(x["instances"] for x in s["series"]) == len(datasets)],
            timeout=30,
        )[0]
        assert row["generation"] == 2
    finally:
        lp.stop()  # ends with the test, also when an assertion above failed


@pytest.fixture
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_answers_out_of_resources_and_recovers(small_tmpfs: Path, make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    filler = small_tmpfs / "filler.bin"
    settings = make_settings(data_dir=small_tmpfs / "data", database={"url": f"sqlite:///{tmp_path / 'index.sqlite3'}"})
    service = ListenerService(settings)
    service.start()
    try:
        study = generate_mr_study(tmp_path / "study", seed=2, series=("t1",), rows=128, columns=128, slices=8)
        datasets = [dcmread(p) for p in study.files]
        # Leave room for less than one instance.
        free = shutil.disk_usage(small_tmpfs).free
        filler.write_bytes(b"\0" * max(free - 8192, 0))
        assoc = _assoc(settings.port)
        assert assoc.send_c_store(datasets[0]).Status == StoreStatus.OUT_OF_RESOURCES
        assert assoc.send_c_store(datasets[1]).Status == StoreStatus.OUT_OF_RESOURCES
        assoc.release()
        assert not list((small_tmpfs / "data" / "spool" / ".incoming").iterdir())  # no partial files left

        filler.unlink()  # space returns: the same SCP stores again
        assoc = _assoc(settings.port)
        assert all(assoc.send_c_store(ds).Status == 0 for ds in datasets)
        assoc.release()
        assert len(list((small_tmpfs / "data" / "spool").rglob("*.dcm"))) == len(datasets)
    finally:
        service.stop()


def test_several_listener_processes_share_the_port_with_parallel_senders(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = generate_mr_study(tmp_path / "study", seed=8, series=("t1", "t2", "flair", "t1c"), slices=10)
    service = ListenerService(make_settings(listener={"processes": 2}))
    service.start()
    try:
        procs = []
        for gen in study.series:
            cmd = [dcmtk.tool("storescu"), "-aec", "RADNODE", "127.0.0.1", str(service.settings.port), *map(str, gen.files)]
            procs.append(subprocess.Popen(cmd, env=dcmtk.dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for p in procs:
            assert p.wait(60) == 0, p.stdout.read() if p.stdout else ""
        from radnode.store.studies import list_studies

        def complete():  # type: ignore[no-untyped-def]
            with service.sessions() as session:
                return [r for r in list_studies(session) if r[0].state == "complete"]

        row, series = wait_until(complete, timeout=30)[0]
        assert sum(s.instances for s in series) == study.instance_count
    finally:
        service.stop()
