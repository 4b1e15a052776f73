"""Tests for the synthetic MR study generator and compress().

Why these matter: every networking/routing test downstream trusts that the
generated studies are deterministic, geometrically sane, valid MR IODs, and
that compressed variants really carry the transfer syntax they claim.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from radnode.synth.commands import synth
from radnode.synth.mr_study import (
    COMPRESS_TRANSFER_SYNTAX,
    LOSSLESS_SYNTAXES,
    SERIES_LABELS,
    GeneratedStudy,
    compress,
    generate_mr_study,
)

from tests.support.require import unavailable

DCIODVFY = "/usr/bin/dciodvfy"


def _need(binary: str) -> None:
    """Skip locally, fail on CI, when an external tool is missing."""
    if os.access(binary, os.X_OK):
        return
    unavailable(f"{binary} not installed")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> GeneratedStudy:
    return generate_mr_study(tmp_path_factory.mktemp("mr") / "study", seed=0)


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def test_layout_and_counts(study: GeneratedStudy) -> None:
    assert [s.label for s in study.series] == list(SERIES_LABELS)
    assert study.by_label("localizer").instance_count == 3
    for label in ("t1", "t2", "flair", "t1c"):
        assert study.by_label(label).instance_count == 12
    assert study.instance_count == 51
    for s in study.series:
        assert [f.relative_to(study.out_dir).as_posix() for f in s.files] == [
            f"{s.series_number}/{i}.dcm" for i in range(1, s.instance_count + 1)
        ]
    uids = [u for s in study.series for u in s.sop_instance_uids]
    assert len(set(uids)) == len(uids)
    assert len({s.series_instance_uid for s in study.series}) == len(study.series)


def test_same_seed_same_bytes_and_uids(tmp_path: Path) -> None:
    a = generate_mr_study(tmp_path / "a", seed=7, slices=4)
    b = generate_mr_study(tmp_path / "b", seed=7, slices=4)
    assert a.study_instance_uid == b.study_instance_uid
    assert [s.series_instance_uid for s in a.series] == [s.series_instance_uid for s in b.series]
    for fa, fb in zip(a.files, b.files, strict=True):
        assert fa.read_bytes() == fb.read_bytes()


def test_different_seed_or_accession_differs(tmp_path: Path) -> None:
    a = generate_mr_study(tmp_path / "a", seed=7, slices=2, series=("t1",))
    b = generate_mr_study(tmp_path / "b", seed=8, slices=2, series=("t1",))
    c = generate_mr_study(tmp_path / "c", seed=7, slices=2, series=("t1",), accession="OTHER1")
    assert len({a.study_instance_uid, b.study_instance_uid, c.study_instance_uid}) == 3
    assert not np.array_equal(_read(a.files[0]).pixel_array, _read(b.files[0]).pixel_array)
    for s in (a, b, c):
        assert pydicom.uid.UID(s.study_instance_uid).is_valid
        assert s.study_instance_uid.startswith("2.25.")


def test_seeds_cover_both_vendors(tmp_path: Path) -> None:
    vendors = {}
    for seed in range(4):
        st = generate_mr_study(tmp_path / str(seed), seed=seed, slices=1, series=("t2",))
        ds = _read(st.files[0])
        vendors[st.vendor] = ds.Manufacturer
    assert vendors == {"siemens": "SIEMENS", "ge": "GE MEDICAL SYSTEMS"}


def test_headers_per_series(study: GeneratedStudy) -> None:
    ds_by = {s.label: _read(s.files[0]) for s in study.series}
    for label, ds in ds_by.items():
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "MR"
        assert ds.PatientPosition == "HFS"
        assert ds.BodyPartExamined == "BRAIN"
        assert ds.AccessionNumber == study.accession
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.FrameOfReferenceUID == study.frame_of_reference_uid
        assert ds.SeriesDescription == study.by_label(label).description
        assert float(ds.MagneticFieldStrength) in (1.5, 3.0)
        for kw in ("ProtocolName", "RepetitionTime", "EchoTime", "FlipAngle", "ScanningSequence",
                   "SequenceVariant", "MRAcquisitionType", "SliceThickness", "ImageType",
                   "Manufacturer", "StationName", "InstanceNumber"):
            assert kw in ds, (label, kw)
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
    assert "IR" in ds_by["flair"].ScanningSequence and float(ds_by["flair"].InversionTime) > 1000
    assert float(ds_by["t2"].RepetitionTime) > float(ds_by["t1"].RepetitionTime)
    assert float(ds_by["t2"].EchoTime) > float(ds_by["t1"].EchoTime)
    assert ds_by["t1c"].ContrastBolusAgent and "ContrastBolusAgent" not in ds_by["t1"]
    assert ds_by["t1c"].MRAcquisitionType == "3D" and ds_by["t2"].MRAcquisitionType == "2D"


def test_axial_geometry_is_a_consistent_volume(study: GeneratedStudy) -> None:
    for label in ("t1", "t2", "flair", "t1c"):
        dss = [_read(f) for f in study.by_label(label).files]
        iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
        assert all(np.allclose(np.array(d.ImageOrientationPatient, dtype=float), iop) for d in dss)
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([np.array(d.ImagePositionPatient, dtype=float) for d in dss])
        steps = np.diff(pos @ normal)
        spacing = float(dss[0].SpacingBetweenSlices)
        assert np.allclose(steps, spacing, atol=1e-4), label
        assert spacing >= float(dss[0].SliceThickness)
        # in-plane origin identical for all slices: a pure translation along the normal
        assert np.allclose(pos - np.outer(pos @ normal, normal), pos[0] - (pos[0] @ normal) * normal)
        assert [d.InstanceNumber for d in dss] == list(range(1, len(dss) + 1))
        assert np.allclose([float(d.SliceLocation) for d in dss], pos @ normal, atol=1e-4)
        ps = [float(v) for v in dss[0].PixelSpacing]
        assert ps[0] == ps[1] and 150 < ps[0] * dss[0].Columns < 300  # a head-sized FOV
    loc = [_read(f) for f in study.by_label("localizer").files]
    normals = [np.cross(*np.split(np.array(d.ImageOrientationPatient, dtype=float), 2)) for d in loc]
    assert np.allclose(np.abs(np.array(normals)), np.eye(3)[[0, 1, 2]])  # sagittal, coronal, axial


def test_pixels_show_a_head_with_contrast(study: GeneratedStudy) -> None:
    mid = {lbl: _read(study.by_label(lbl).files[6]).pixel_array for lbl in ("t1", "t2", "flair")}
    for lbl, arr in mid.items():
        assert arr.dtype == np.uint16 and arr.shape == (64, 64)
        assert arr.max() < 4096
        centre, corner = arr[24:40, 24:40].mean(), arr[:6, :6].mean()
        assert centre > 5 * corner, lbl
    # CSF (ventricles) bright on T2, suppressed on FLAIR: T2 has the brighter top percentile
    assert np.percentile(mid["t2"], 99) > np.percentile(mid["flair"], 99)


def test_series_subset_and_bad_label(tmp_path: Path) -> None:
    st = generate_mr_study(tmp_path / "s", seed=1, series=("flair", "t1c"), slices=3)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["4", "5"]
    assert st.instance_count == 6
    with pytest.raises(ValueError):
        generate_mr_study(tmp_path / "x", series=("dwi",))


@pytest.mark.parametrize("syntax", sorted(COMPRESS_TRANSFER_SYNTAX))
def test_compress_roundtrip(study: GeneratedStudy, tmp_path: Path, syntax: str) -> None:
    if syntax in ("jpegls", "jpeg-lossless", "jpeg-baseline"):
        _need("/usr/bin/dcmcjpls" if syntax == "jpegls" else "/usr/bin/dcmcjpeg")
    src = study.by_label("t2").files[5]
    out = compress(src, tmp_path / f"{syntax}.dcm", syntax)  # type: ignore[arg-type]
    orig, ds = _read(src), _read(out)
    assert ds.file_meta.TransferSyntaxUID == COMPRESS_TRANSFER_SYNTAX[syntax]
    assert ds.StudyInstanceUID == orig.StudyInstanceUID
    if syntax != "deflated":
        assert ds["PixelData"].is_undefined_length  # really encapsulated
    arr = ds.pixel_array
    if syntax in LOSSLESS_SYNTAXES:
        assert ds.SOPInstanceUID == orig.SOPInstanceUID
        assert np.array_equal(arr, orig.pixel_array)
        assert out.stat().st_size < src.stat().st_size
    else:
        assert ds.SOPInstanceUID != orig.SOPInstanceUID
        assert ds.LossyImageCompression == "01"
        assert arr.dtype == np.uint8
        ref = orig.pixel_array.astype(float) * 255.0 / orig.pixel_array.max()
        assert np.abs(arr.astype(float) - ref).mean() < 6


def test_dciodvfy_reports_no_errors(study: GeneratedStudy) -> None:
    _need(DCIODVFY)
    for label in ("localizer", "flair", "t1c"):
        proc = subprocess.run([DCIODVFY, str(study.by_label(label).files[0])],
                              capture_output=True, text=True, timeout=30)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error -")]
        assert errors == [], (label, errors)


def test_cli_study(tmp_path: Path) -> None:
    result = CliRunner().invoke(synth, ["study", "--out", str(tmp_path / "cli"), "--seed", "5",
                                        "--slices", "3"])
    assert result.exit_code == 0, result.output
    assert "15 files written" in result.output  # 3 localizer + 4 x 3
    assert len(list((tmp_path / "cli").rglob("*.dcm"))) == 15
    again = generate_mr_study(tmp_path / "py", seed=5, slices=3)
    assert again.study_instance_uid in result.output
