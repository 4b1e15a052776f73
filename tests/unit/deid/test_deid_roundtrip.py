"""De-identification round trip (PS3.15 E.1 basic profile) through bytes and the real SQLite map."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radnode.deid import Deidentifier, DeidOptions, SqlMappingStore
from radnode.settings import Settings
from radnode.store.db import open_store
from radnode.synth.mr_study import generate_mr_study

SECRET = b"node-secret-0123456789abcdef"


def _roundtrip(ds: Dataset) -> Dataset:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(BytesIO(buf.getvalue()))


@pytest.fixture
def deid(tmp_path: Path) -> Deidentifier:
    _, sessions = open_store(Settings(data_dir=tmp_path / "data"))
    return Deidentifier(SqlMappingStore(sessions), SECRET)


def test_basic_profile_removes_identity_and_results_are_reidentified(deid: Deidentifier, tmp_path: Path) -> None:
    study = generate_mr_study(tmp_path / "s", seed=41, series=("t1",), slices=2)
    originals = [dcmread(p) for p in study.series[0].files]
    src = originals[0]
    src.PatientName, src.PatientID, src.PatientBirthDate, src.AccessionNumber = "DOE^JANE", "PID-777", "19700101", "ACC12345"
    src.InstitutionName = "General Hospital"
    src.add_new(0x00091010, "LO", "private secret")
    out = _roundtrip(deid.deidentify(src))
    text = repr(out)
    for secret in ("DOE", "PID-777", "19700101", "ACC12345", "General Hospital", "private secret"):
        assert secret not in text
    assert out.PatientIdentityRemoved == "YES"
    assert out.StudyInstanceUID != src.StudyInstanceUID and out.StudyInstanceUID.startswith("2.25.")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert (out.pixel_array == src.pixel_array).all()
    # Deterministic: the second slice lands in the same pseudonymous study and series.
    second = deid.deidentify(originals[1])
    assert (second.StudyInstanceUID, second.SeriesInstanceUID) == (out.StudyInstanceUID, out.SeriesInstanceUID)
    assert second.SOPInstanceUID != out.SOPInstanceUID

    # A result computed outside: new own UIDs, references to the de-identified input.
    result = Dataset()
    result.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    result.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.900.1"
    result.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.900.2"
    result.StudyInstanceUID = out.StudyInstanceUID
    result.PatientID, result.PatientName, result.AccessionNumber = out.PatientID, out.PatientName, out.AccessionNumber
    ref = Dataset()
    ref.SeriesInstanceUID = out.SeriesInstanceUID
    inst = Dataset()
    inst.ReferencedSOPClassUID = out.SOPClassUID
    inst.ReferencedSOPInstanceUID = out.SOPInstanceUID
    ref.ReferencedSOPSequence = Sequence([inst])
    result.ReferencedSeriesSequence = Sequence([ref])
    back = deid.reidentify(result)
    assert back.StudyInstanceUID == src.StudyInstanceUID
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert back.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert (str(back.PatientName), back.PatientID, back.PatientBirthDate, back.AccessionNumber) == ("DOE^JANE", "PID-777", "19700101", "ACC12345")
    assert back.SOPInstanceUID == result.SOPInstanceUID  # the result's own identity is kept
    assert "PatientIdentityRemoved" not in back


def test_retain_options_and_a_wrong_secret(tmp_path: Path) -> None:
    _, sessions = open_store(Settings(data_dir=tmp_path / "data"))
    ds = dcmread(generate_mr_study(tmp_path / "s", seed=42, series=("t1",), slices=1).series[0].files[0])
    kept = Deidentifier(SqlMappingStore(sessions), SECRET, DeidOptions(retain_uids=True, retain_dates=True)).deidentify(ds)
    assert kept.StudyInstanceUID == ds.StudyInstanceUID and kept.get("StudyDate") == ds.get("StudyDate")
    other = Deidentifier(SqlMappingStore(sessions), b"another-secret-0123456789").deidentify(ds)
    assert other.StudyInstanceUID != Deidentifier(SqlMappingStore(sessions), SECRET).deidentify(ds).StudyInstanceUID
    with pytest.raises(ValueError, match="secret"):
        Deidentifier(SqlMappingStore(sessions), b"short")
