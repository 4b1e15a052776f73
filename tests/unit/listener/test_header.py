"""The plain header walk agrees with pydicom, and leaves unusual data sets to it."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radnode.listener.header import WANTED, read_header
from radnode.synth.mr_study import generate_mr_study

KEYWORDS = [k for k, _ in WANTED.values()]


def _encode(ds: Dataset, ts: str) -> bytes:
    from pynetdicom.dsutils import encode

    out = encode(ds, ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian)
    assert out is not None
    return out


def _expected(raw: bytes, ts: str) -> dict[str, str]:
    from pydicom.filereader import read_dataset

    ds = read_dataset(BytesIO(raw), ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian)
    return {k: str(ds.get(k)) for k in KEYWORDS if k in ds}


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_matches_pydicom_on_generated_mr(tmp_path: Path, ts: str) -> None:
    study = generate_mr_study(tmp_path / "s", seed=3, series=("t1", "flair"), rows=32, columns=32, slices=3)
    for path in study.files:
        ds = dcmread(path)
        # A nested undefined-length sequence before the wanted elements, as scanners write them.
        inner = Dataset()
        inner.ReferencedSOPInstanceUID = "1.2.3"
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        item.ReferencedImageSequence = Sequence([inner])
        ds.ReferencedImageSequence = Sequence([item])
        ds.SeriesDescription = " padded "
        raw = _encode(ds, ts)
        got = read_header(raw, ts)
        assert got is not None
        assert got == _expected(raw, ts)


def test_unusual_values_go_to_pydicom() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2.4"
    ds.SeriesInstanceUID = "1.2.5"
    ds.SeriesDescription = "Schädel"
    ds.SpecificCharacterSet = "ISO_IR 100"
    assert read_header(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian) is None
    ds.SeriesDescription = "plain"
    ds.Modality = ["MR", "CT"]
    assert read_header(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian) is None


def test_truncated_bytes_go_to_pydicom() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2.4"
    ds.SeriesInstanceUID = "1.2.5"
    raw = _encode(ds, ExplicitVRLittleEndian)
    assert read_header(raw[:-3], ExplicitVRLittleEndian) is None
    assert read_header(b"\x08\x00\x18\x00garbage!", ExplicitVRLittleEndian) is None
