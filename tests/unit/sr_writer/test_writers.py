"""Result writers: SEG, SR, PDF, Encapsulated PDF and SC from a synthetic series.

The objects are checked the way a PACS and a second DICOM implementation
would see them: dciodvfy (IOD), dsrdump (SR), highdicom read-back (SEG
voxels in patient coordinates), pdftotext (what the PDF says).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radnode.analyzers.base import AnalyzerResult, Finding, LabelMap, Measurement, ModelInfo, Segment
from radnode.model.branding import ReportBranding
from radnode.sr_writer.encapsulated_pdf import build_encapsulated_pdf
from radnode.sr_writer.provenance import DEMO_MARKER, OutputProvenance, series_description
from radnode.sr_writer.seg import (
    build_segmentation,
    label_map_for_sources,
    segmentation_to_label_map,
    sort_sources,
)
from radnode.sr_writer.sr import build_measurement_report
from radnode.sr_writer.validate import dciodvfy, dsrdump, read_back
from radnode.sr_writer.writer import WrittenObjects, write_results
from tests.unit.sr_writer.synthetic import SEGMENTS, make_label_map, make_series, write_series
from tests.support.require import unavailable

DEMO = ModelInfo("glioma-net", "1.0.0", demo=True, manufacturer="radnode", intended_use="Research only")
CLINICAL = ModelInfo("glioma-net", "1.0.0", demo=False)
MEASUREMENTS = [
    Measurement("Whole tumour volume", 10.25, "mL", segment="Whole tumour"),
    Measurement("Largest diameter", 31.0, "mm", segment="Whole tumour"),
]


def _require(tool: str) -> None:
    """Skip locally without the tool; on CI a missing tool is a failure."""
    if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").is_file():
        unavailable(f"{tool} not installed")


def _result() -> AnalyzerResult:
    return AnalyzerResult(
        label_maps=[LabelMap("glioma", make_label_map(), "t1c", SEGMENTS)],
        measurements=list(MEASUREMENTS),
        findings=[Finding("Tumour", True, 0.93, "single lesion")],
    )


def _write(tmp: Path, job_id: str, tilt: float, *, model: ModelInfo = DEMO, pages: bool = True) -> tuple[WrittenObjects, list]:
    series = make_series(f"s{tilt}", tilt_deg=tilt)
    paths = write_series(series, tmp / "src")
    written = write_results(
        job_id=job_id,
        result=_result(),
        model=model,
        out_dir=tmp / "out",
        application="Glioma",
        source_series={"t1c": paths},
        branding=ReportBranding(institution_name="Example Hospital", department="Neuroradiology"),
        prior_results=[("2023-11-02", {"Whole tumour": 12.0, "Enhancing tumour": 1.5})],
        render_pages=pages,
    )
    return written, series


@pytest.fixture(scope="module", params=[0.0, 17.0], ids=["axial", "tilted"])
def written(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp(f"w{request.param}")
    objs, series = _write(tmp, "job-1", request.param)
    return objs, series


def test_all_objects_written_and_read_back(written) -> None:  # type: ignore[no-untyped-def]
    objs, _ = written
    for key in ("seg", "sr", "pdf", "encapsulated_pdf"):
        assert objs.paths[key] is not None and objs.paths[key].is_file(), key
    scs = objs.paths["secondary_captures"]
    assert len(scs) >= 3  # three key images (+ report pages with poppler)
    for path in objs.dicom_files():
        ds = read_back(path)
        assert ds.SOPInstanceUID == objs.sop_instance_uids[path]


def test_dciodvfy_reports_no_errors(written) -> None:  # type: ignore[no-untyped-def]
    _require("dciodvfy")
    objs, _ = written
    for path in objs.dicom_files():
        errors = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"


def test_dsrdump_reads_the_sr(written) -> None:  # type: ignore[no-untyped-def]
    _require("dsrdump")
    objs, _ = written
    text = dsrdump(objs.paths["sr"])
    assert "Imaging Measurement Report" in text
    assert '"Volume"' in text and "(ml,UCUM" in text
    assert '(81827009,SCT,"Diameter")' in text or '"Diameter")="31' in text
    assert '(56851009,SCT,"Maximum")' in text
    assert '"Device Observer Name")="glioma-net"' in text
    assert '"Device Observer Model Name")="glioma-net 1.0.0"' in text
    assert "Referenced Segment" in text or "Segment" in text
    assert '(52101004,SCT,"Present")' in text and '"Probability")="0.93"' in text


def test_seg_voxels_equal_label_map_in_patient_coordinates(written) -> None:  # type: ignore[no-untyped-def]
    objs, series = written
    label = make_label_map()
    back = segmentation_to_label_map(objs.paths["seg"], series, SEGMENTS)
    np.testing.assert_array_equal(back, label)

    # Independently of radnode's reader: highdicom's volume, mapped through
    # its affine, must put each label at the source voxel's patient position.
    seg = hd.seg.segread(objs.paths["seg"])
    vol = seg.get_volume(combine_segments=True, relabel=False)
    ordered = sort_sources(series)
    iop = np.array([float(v) for v in ordered[0].ImageOrientationPatient])
    dr, dc = (float(v) for v in ordered[0].PixelSpacing)
    z, y, x = label.shape
    rr, cc = np.mgrid[0:y, 0:x]
    inv = np.linalg.inv(vol.affine)
    number_to_value = {i + 1: s.value for i, s in enumerate(SEGMENTS)}
    for k, ds in enumerate(ordered):
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        world = ipp[None, None, :] + cc[..., None] * dc * iop[:3] + rr[..., None] * dr * iop[3:]
        idx = np.einsum("ij,yxj->yxi", inv[:3, :3], world) + inv[:3, 3]
        rounded = np.round(idx).astype(int)
        assert np.allclose(idx, rounded, atol=1e-3)
        inside = np.all((rounded >= 0) & (rounded < np.array(vol.spatial_shape)), axis=-1)
        got = np.zeros((y, x), dtype=int)
        got[inside] = vol.array[tuple(rounded[inside].T)]
        got = np.vectorize(lambda n: number_to_value.get(int(n), 0))(got)
        np.testing.assert_array_equal(got, label[k], err_msg=f"slice {k}")


def test_seg_describes_segments_and_algorithm(written) -> None:  # type: ignore[no-untyped-def]
    objs, series = written
    ds = pydicom.dcmread(objs.paths["seg"])
    assert ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [s.name for s in SEGMENTS]
    for item in ds.SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("glioma-net", "1.0.0")
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert ds.StudyInstanceUID == series[0].StudyInstanceUID
    assert ds.SeriesInstanceUID != series[0].SeriesInstanceUID
    # empty first slice is omitted
    assert int(ds.NumberOfFrames) < 3 * len(series)
    # highdicom lists the scanner (109101) and itself; radnode adds the AI.
    ai = [ce for ce in ds.ContributingEquipmentSequence if ce.get("ContributionDescription", "").startswith("AI inference")]
    assert ai[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert len(ai) == 1 and ai[0].ManufacturerModelName == "glioma-net" and ai[0].SoftwareVersions == "1.0.0"


def test_demo_flag_in_series_descriptions_and_pdf(written) -> None:  # type: ignore[no-untyped-def]
    _require("pdftotext")
    objs, _ = written
    for path in objs.dicom_files():
        desc = pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription
        assert DEMO_MARKER in desc and "AI-generated" in desc, (path.name, desc)
        assert desc.isascii() and len(desc) <= 64
    text = subprocess.run(["pdftotext", "-layout", str(objs.paths["pdf"]), "-"], capture_output=True, text=True, check=True).stdout
    assert "NOT FOR CLINICAL USE" in text
    assert "Page 1 of" in text
    # volumes: whole tumour (given) and each sub-region (computed from voxels)
    assert "10.25" in text
    voxel_ml = 2.0 * 1.0 * 1.25 / 1000
    label = make_label_map()
    for s in SEGMENTS:
        assert s.name in text
        assert f"{np.count_nonzero(label == s.value) * voxel_ml:.2f}" in text
    assert "PID-0001" in text and "ACC12345" in text
    assert "Change" in text and "12.00" in text  # prior comparison
    assert "glioma-net" in text and "1.0.0" in text


def test_encapsulated_pdf_wraps_the_report(written) -> None:  # type: ignore[no-untyped-def]
    objs, series = written
    ds = read_back(objs.paths["encapsulated_pdf"])
    raw = objs.paths["pdf"].read_bytes()
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.BurnedInAnnotation == "YES"
    assert int(ds.EncapsulatedDocumentLength) == len(raw)
    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert bytes(ds.EncapsulatedDocument[: len(raw)]) == raw
    assert ds.StudyInstanceUID == series[0].StudyInstanceUID and ds.PatientID == "PID-0001"


def test_secondary_captures_burned_in(written) -> None:  # type: ignore[no-untyped-def]
    objs, series = written
    for path in objs.paths["secondary_captures"]:
        ds = read_back(path)
        assert ds.BurnedInAnnotation == "YES"
        assert ds.PhotometricInterpretation == "RGB"
        assert ds.StudyInstanceUID == series[0].StudyInstanceUID
        assert ds.pixel_array.ndim == 3


def test_uids_are_deterministic_per_job(tmp_path: Path) -> None:
    a, _ = _write(tmp_path / "a", "job-7", 0.0, pages=False)
    b, _ = _write(tmp_path / "b", "job-7", 0.0, pages=False)
    c, _ = _write(tmp_path / "c", "job-8", 0.0, pages=False)
    names = lambda w: {p.name: uid for p, uid in w.sop_instance_uids.items()}  # noqa: E731
    assert names(a) == names(b)
    assert not set(names(a).values()) & set(names(c).values())
    sa = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in a.dicom_files()}
    sc = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in c.dicom_files()}
    assert len(sa) == 4 and not sa & sc  # seg, sr, pdf, sc: one series each


def test_label_map_for_sources_undoes_sitk_orientation() -> None:
    series = make_series("sitk", tilt_deg=17.0)
    ordered = sort_sources(series)
    label = make_label_map()
    iop = np.array([float(v) for v in ordered[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dr, dc = (float(v) for v in ordered[0].PixelSpacing)
    # A label image stored with the slice axis reversed and x flipped.
    flipped = label[::-1, :, ::-1]
    img = sitk.GetImageFromArray(np.ascontiguousarray(flipped))
    last = np.array([float(v) for v in ordered[-1].ImagePositionPatient])
    origin = last + (label.shape[2] - 1) * dc * row
    img.SetOrigin(tuple(origin))
    img.SetSpacing((dc, dr, 2.0))
    img.SetDirection(tuple(np.column_stack([-row, col, -normal]).ravel()))
    np.testing.assert_array_equal(label_map_for_sources(img, series), label)
    # a grid shifted by half a voxel is refused
    img.SetOrigin(tuple(origin + 0.5 * dc * row))
    with pytest.raises(ValueError, match="label_image"):
        label_map_for_sources(img, series)


def test_non_demo_descriptions_have_no_demo_marker() -> None:
    prov = OutputProvenance("job-x", CLINICAL)
    for kind in ("seg", "sr", "pdf", "sc"):
        desc = prov.series(kind).description
        assert "AI-generated" in desc and DEMO_MARKER not in desc
    assert series_description("x" * 80, demo=True).startswith(DEMO_MARKER)
    assert len(series_description("x" * 80, demo=True)) == 64


def test_one_segment_sr_and_findings_only(tmp_path: Path) -> None:
    series = make_series("one", tilt_deg=0.0)
    prov = OutputProvenance("job-one", DEMO)
    label = (make_label_map() == 4).astype(np.uint8)
    seg_def = (Segment(1, "Enhancing tumour"),)
    seg = build_segmentation(series, label, seg_def, prov)
    sr = build_measurement_report(series, prov, segmentation=seg, segments=seg_def, measurements=[Measurement("v", 1.0, "mL", segment="Enhancing tumour")])
    assert sr.SOPInstanceUID == prov.instance_uid("sr")
    # A detection application: no label map, findings only.
    paths = write_series(series, tmp_path / "src")
    objs = write_results(
        job_id="det-1",
        result=AnalyzerResult(findings=[Finding("Intracranial haemorrhage", False, 0.04)]),
        model=DEMO,
        out_dir=tmp_path / "out",
        application="Haemorrhage detection",
        source_series={"ct": paths},
        render_pages=False,
    )
    assert objs.paths["seg"] is None and objs.paths["sr"].is_file()
    if dciodvfy(objs.paths["sr"]) is not None:
        assert dciodvfy(objs.paths["sr"]) == []


def test_argument_errors_name_the_argument(tmp_path: Path) -> None:
    series = make_series("args", tilt_deg=0.0)
    prov = OutputProvenance("job-args", DEMO)
    label = make_label_map()
    with pytest.raises(ValueError, match="job_id"):
        OutputProvenance("", DEMO)
    with pytest.raises(TypeError, match="model"):
        OutputProvenance("j", "glioma-net")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="series"):
        OutputProvenance("j", DEMO, series={"xyz": (1, "a")})
    with pytest.raises(ValueError, match="label_map"):
        build_segmentation(series, label[:-1], SEGMENTS, prov)
    with pytest.raises(ValueError, match="label_map"):
        build_segmentation(series, np.where(label == 4, 9, label).astype(np.uint8), SEGMENTS, prov)
    with pytest.raises(TypeError, match="label_map"):
        build_segmentation(series, label.astype(float), SEGMENTS, prov)
    with pytest.raises(ValueError, match="segments"):
        build_segmentation(series, label, (), prov)
    with pytest.raises(ValueError, match="segmentation_type"):
        build_segmentation(series, label, SEGMENTS, prov, segmentation_type="FRACTIONAL")
    with pytest.raises(ValueError, match="source_images"):
        build_segmentation([], label, SEGMENTS, prov)
    with pytest.raises(TypeError, match="provenance"):
        build_segmentation(series, label, SEGMENTS, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segmentation"):
        build_measurement_report(series, prov, segments=SEGMENTS)
    with pytest.raises(ValueError, match="findings"):
        build_measurement_report(series, prov, findings=[Finding("x", True, 1.5)])
    with pytest.raises(ValueError, match="pdf_bytes"):
        build_encapsulated_pdf(b"not a pdf", series[0], prov)
    with pytest.raises(ValueError, match="source_series"):
        write_results(job_id="j", result=_result(), model=DEMO, out_dir=tmp_path, application="Glioma")
    with pytest.raises(ValueError, match="primary_color"):
        ReportBranding(primary_color="blue")
    with pytest.raises(ValueError, match="extra"):
        ReportBranding(colour="#000000")  # type: ignore[call-arg]


def test_labelmap_seg_option_round_trips(tmp_path: Path) -> None:
    """LABELMAP (Sup 243) reads back exactly. Not dciodvfy-checked: the
    installed dicom3tools does not know the Label Map Segmentation IOD."""
    series = make_series("lm", tilt_deg=17.0)
    seg = build_segmentation(series, make_label_map(), SEGMENTS, OutputProvenance("job-lm", DEMO), segmentation_type="LABELMAP")
    seg.save_as(tmp_path / "lm.dcm")
    assert str(seg.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.66.7"
    np.testing.assert_array_equal(segmentation_to_label_map(tmp_path / "lm.dcm", series, SEGMENTS), make_label_map())


def _numeric_items(items) -> list[tuple[tuple[str, str], float, str, list[tuple[str, str]]]]:  # type: ignore[no-untyped-def]
    """Every NUM content item in an SR tree: (concept code, value, UCUM unit, derivation codes)."""
    out = []
    for item in items:
        if item.ValueType == "NUM":
            concept = item.ConceptNameCodeSequence[0]
            mv = item.MeasuredValueSequence[0]
            modifiers = [(m.ConceptCodeSequence[0].CodeValue, m.ConceptCodeSequence[0].CodingSchemeDesignator)
                         for m in getattr(item, "ContentSequence", []) if m.ValueType == "CODE"]
            unit = mv.MeasurementUnitsCodeSequence[0]
            assert unit.CodingSchemeDesignator == "UCUM"
            out.append(((concept.CodeValue, concept.CodingSchemeDesignator), float(mv.NumericValue), unit.CodeValue, modifiers))
        out.extend(_numeric_items(getattr(item, "ContentSequence", [])))
    return out


def _measurement_groups(items) -> list:  # type: ignore[no-untyped-def,type-arg]
    """The CONTAINER items named "Measurement Group" (DCM 125007), anywhere in the tree."""
    out = []
    for item in items:
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
            out.append(item)
        else:
            out.extend(_measurement_groups(getattr(item, "ContentSequence", [])))
    return out


def test_the_sr_read_back_holds_every_measurement_with_its_value_unit_and_code(written) -> None:  # type: ignore[no-untyped-def]
    """The SR, read back with pydicom, carries each of the job's measurements — value, UCUM unit and concept code."""
    objs, _ = written
    groups = _measurement_groups(pydicom.dcmread(objs.paths["sr"]).ContentSequence)
    assert groups, "no TID 1501/1411 measurement group"
    numbers = [n for g in groups for n in _numeric_items(g.ContentSequence) if n[0] != ("122157", "DCM")]  # not probabilities
    expected = {
        "Whole tumour volume": (("118565006", "SCT"), 10.25, "ml", []),  # SCT Volume in millilitres
        "Largest diameter": (("81827009", "SCT"), 31.0, "mm", [("56851009", "SCT")]),  # SCT Diameter, derivation Maximum
    }
    for m in MEASUREMENTS:
        assert expected[m.name] in numbers, (m.name, numbers)
    # Beside them, only the volumes of the SEG's segments (one group per segment), each SCT Volume in ml and > 0.
    others = [n for n in numbers if n not in expected.values()]
    assert len(others) == len(SEGMENTS) and all(n[0] == ("118565006", "SCT") and n[2] == "ml" and n[1] > 0 for n in others), others
