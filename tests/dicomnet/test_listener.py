"""The SCP through real peers: DCMTK tools, pynetdicom associations, Orthanc."""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from radnode.listener.service import ListenerService
from radnode.listener.status import StoreStatus
from radnode.synth.mr_study import compress, generate_mr_study
from radnode.store.studies import list_studies
from tests.conftest import wait_until
from tests.support import dcmtk


def _studies(service: ListenerService) -> list:  # type: ignore[type-arg]
    with service.sessions() as session:
        return list_studies(session)


def _associate(port: int, called: str = "RADNODE", calling: str = "TESTSCU", contexts=None):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    for sop, syntaxes in (contexts or [(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]):
        ae.add_requested_context(sop, syntaxes)
    return ae.associate("127.0.0.1", port, ae_title=called)


def test_echoscu_succeeds_and_unknown_called_ae_is_rejected(listener: ListenerService) -> None:
    ok = dcmtk.echoscu("127.0.0.1", listener.settings.port, "RADNODE")
    assert ok.returncode == 0, ok.stderr
    bad = dcmtk.echoscu("127.0.0.1", listener.settings.port, "NOT_RADNODE")
    assert bad.returncode != 0
    assert "Called AE Title Not Recognized" in bad.stdout + bad.stderr


def test_storescu_multi_series_study_is_spooled_indexed_and_completes(listener: ListenerService, tmp_path: Path) -> None:
    study = generate_mr_study(tmp_path / "study", seed=3)
    res = dcmtk.storescu("127.0.0.1", listener.settings.port, tmp_path / "study", "RADNODE", calling_ae="MODALITY1")
    assert res.returncode == 0, res.stdout + res.stderr

    rows = wait_until(lambda: [r for r in _studies(listener) if r[0].state == "complete"])
    row, series = rows[0]
    assert row.study_instance_uid == study.study_instance_uid
    assert row.calling_ae == "MODALITY1" and row.called_ae == "RADNODE"
    assert {s.series_instance_uid: s.instances for s in series} == {
        s.series_instance_uid: len(s.files) for s in study.series
    }
    # Every file is on disk, byte-for-byte the data set that was sent.
    for gen in study.series:
        for path in gen.files:
            sent = dcmread(path)
            spooled = listener.spool.root / study.study_instance_uid / gen.series_instance_uid / f"{sent.SOPInstanceUID}.dcm"
            got = dcmread(spooled)
            assert got.PixelData == sent.PixelData
            assert got.file_meta.SourceApplicationEntityTitle.strip() == "MODALITY1"
    assert not list(listener.spool.incoming.iterdir())


@pytest.mark.parametrize("syntax", ["jpeg2000", "jpegls", "jpeg-lossless", "rle", "deflated"])
def test_compressed_instances_are_stored_as_received(listener: ListenerService, tmp_path: Path, syntax: str) -> None:
    study = generate_mr_study(tmp_path / "study", seed=5, series=("t1",), slices=2)
    src = study.series[0].files[0]
    out = compress(src, tmp_path / f"c-{syntax}.dcm", syntax)  # type: ignore[arg-type]
    sent = dcmread(out)
    res = dcmtk.storescu("127.0.0.1", listener.settings.port, [out], "RADNODE", propose=syntax)
    assert res.returncode == 0, res.stdout + res.stderr
    listener.flush()
    path = listener.spool.root / str(sent.StudyInstanceUID) / str(sent.SeriesInstanceUID) / f"{sent.SOPInstanceUID}.dcm"
    got = dcmread(path)
    assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    if syntax != "deflated":
        assert got.PixelData == sent.PixelData  # the encoded stream, untouched
    assert (got.pixel_array == sent.pixel_array).all()


def test_calling_ae_allow_list_and_max_associations(make_settings) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"allowed_calling_aes": ["GOODPACS"], "max_associations": 1}))
    service.start()
    try:
        port = service.settings.port
        refused = dcmtk.echoscu("127.0.0.1", port, "RADNODE", calling_ae="EVILPACS")
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        first = _associate(port, calling="GOODPACS")
        assert first.is_established
        second = _associate(port, calling="GOODPACS")
        assert second.is_rejected  # local limit exceeded
        first.release()
    finally:
        service.stop()


def test_source_address_allow_list(make_settings) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"allowed_hosts": ["10.9.8.0/24"]}))
    service.start()
    try:
        res = dcmtk.echoscu("127.0.0.1", service.settings.port, "RADNODE")
        assert res.returncode != 0
    finally:
        service.stop()


def test_extra_called_ae_titles_are_accepted(make_settings) -> None:  # type: ignore[no-untyped-def]
    service = ListenerService(make_settings(listener={"extra_called_aes": [{"ae_title": "AI_GLIOMA", "application": "glioma"}]}))
    service.start()
    try:
        assert dcmtk.echoscu("127.0.0.1", service.settings.port, "AI_GLIOMA").returncode == 0
        assert dcmtk.echoscu("127.0.0.1", service.settings.port, "RADNODE").returncode == 0
    finally:
        service.stop()


def _mr(study_uid: str = "1.2.826.0.1.3680043.8.498.1", series_uid: str = "1.2.826.0.1.3680043.8.498.2", sop_uid: str = "1.2.826.0.1.3680043.8.498.3") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.PatientName = "SECRET^PATIENT"
    ds.PatientID = "PID-SECRET-42"
    ds.AccessionNumber = "ACC9876543"
    ds.SeriesNumber = 7
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_hostile_uids_are_refused_and_nothing_leaves_the_spool(listener: ListenerService, tmp_path: Path) -> None:
    assoc = _associate(listener.settings.port)
    assert assoc.is_established
    try:
        bad_study = _mr(study_uid="1.2.3/../../x")
        st = assoc.send_c_store(bad_study)
        assert st.Status == StoreStatus.INVALID_UID
        bad_series = _mr(series_uid="..", sop_uid="1.2.826.0.1.3680043.8.498.4")
        assert assoc.send_c_store(bad_series).Status == StoreStatus.INVALID_UID
        # The association keeps working for good instances.
        assert assoc.send_c_store(_mr()).Status == 0x0000
    finally:
        assoc.release()
    listener.flush()
    data_dir = listener.settings.data_dir
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.dcm"))
    assert files == ["spool/1.2.826.0.1.3680043.8.498.1/1.2.826.0.1.3680043.8.498.2/1.2.826.0.1.3680043.8.498.3.dcm"]
    assert not list(tmp_path.rglob("x")) and not (tmp_path / "x").exists()


def test_unparseable_and_incomplete_data_sets_get_cannot_understand(listener: ListenerService) -> None:
    from pynetdicom.dimse_primitives import C_STORE

    assoc = _associate(listener.settings.port)
    try:
        no_study = _mr()
        del no_study.StudyInstanceUID
        assert assoc.send_c_store(no_study).Status == StoreStatus.CANNOT_UNDERSTAND

        # Raw garbage as the data set of a C-STORE, sent below pynetdicom's encoder.
        req = C_STORE()
        req.MessageID = 99
        req.AffectedSOPClassUID = MRImageStorage
        req.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
        req.Priority = 2
        req.DataSet = BytesIO(b"\x08\x00\x18\x00\xff\xff\xff\x7f" + b"\x00" * 40)
        cx = assoc.accepted_contexts[0]
        # Pause the association's reactor as pynetdicom's own send_c_store does,
        # so the response is not taken off the DIMSE queue before we read it.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        try:
            assoc.dimse.send_msg(req, cx.context_id)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert rsp is not None and 0xC000 <= rsp.Status <= 0xCFFF
        # Still serving on the same association.
        assert assoc.send_c_store(_mr()).Status == 0x0000
    finally:
        assoc.release()


def test_unconfigured_sop_class_context_is_refused(listener: ListenerService) -> None:
    private = "1.2.826.0.1.3680043.8.498.999.1"
    assoc = _associate(listener.settings.port, contexts=[(private, [ExplicitVRLittleEndian]), (MRImageStorage, [ExplicitVRLittleEndian])])
    try:
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [MRImageStorage]
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == [private]
    finally:
        assoc.release()


def test_duplicate_instance_counted_once_and_late_instance_reopens_study(listener: ListenerService) -> None:
    assoc = _associate(listener.settings.port)
    try:
        first = _mr()
        first.SeriesDescription = "first copy"
        assert assoc.send_c_store(first).Status == 0
        again = _mr()
        again.SeriesDescription = "second copy"
        assert assoc.send_c_store(again).Status == 0
    finally:
        assoc.release()
    row, series = wait_until(lambda: [r for r in _studies(listener) if r[0].state == "complete"])[0]
    assert [s.instances for s in series] == [1]
    assert row.generation == 1
    spooled = dcmread(next(listener.spool.root.rglob("*.dcm")))
    assert spooled.SeriesDescription == "second copy"

    assoc = _associate(listener.settings.port)
    try:
        assert assoc.send_c_store(_mr(sop_uid="1.2.826.0.1.3680043.8.498.5")).Status == 0
    finally:
        assoc.release()
    row, series = wait_until(lambda: [r for r in _studies(listener) if r[0].state == "complete" and r[0].generation == 2])[0]
    assert [s.instances for s in series] == [2]


def test_patient_identifiers_never_reach_info_logs(listener_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lp = listener_process.start()
    assoc = _associate(lp.port)
    try:
        assert assoc.send_c_store(_mr()).Status == 0
    finally:
        assoc.release()
    wait_until(lambda: any(s["state"] == "complete" for s in lp.studies()))
    text = lp.log_text()
    assert "study complete" in text
    for secret in ("SECRET", "PID-SECRET-42", "ACC9876543"):
        assert secret not in text


def test_orthanc_sends_a_study_and_echoes_radnode(listener: ListenerService, orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = generate_mr_study(tmp_path / "study", seed=11)
    pacs = orthanc_factory(modalities={"radnode": ["RADNODE", "127.0.0.1", listener.settings.port]})
    pacs.upload_dir(tmp_path / "study")
    assert pacs.echo_modality("radnode")
    [orthanc_study] = pacs.studies()
    result = pacs.store_to_modality("radnode", [orthanc_study])
    assert result.get("FailedInstancesCount", 0) == 0
    row, series = wait_until(lambda: [r for r in _studies(listener) if r[0].state == "complete"])[0]
    assert row.study_instance_uid == study.study_instance_uid
    assert row.calling_ae == pacs.aet
    assert sum(s.instances for s in series) == study.instance_count
