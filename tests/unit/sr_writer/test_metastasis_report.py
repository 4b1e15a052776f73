"""Brain metastases lesion by lesion in SR, SEG, PDF, secondary captures and
the stored rows.

Three lesions (enlarging, new, stable) and one resolved lesion on the small
generated T1c series go through ``write_results``; the SR is read back with
:mod:`radnode.sr_writer.sr_reader` (pydicom, not the library that wrote it)
and every value is compared with the result's lesions, tracking and
comparison. Glioma and haemorrhage keep their own tests, unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from radnode.model.lesion_rows import (
    COUNT,
    REGION_SITES,
    STATUS_CODES,
    SUM_DIAMETERS,
    TOTAL_VOLUME,
    lesion_row,
    read_lesion_rows,
    resolved_row,
)
from radnode.model.lesions import LesionStatus
from radnode.sr_writer.sr_reader import groups_by_tracking_id
from radnode.sr_writer.validate import dciodvfy_report
from radnode.sr_writer.writer import WrittenObjects, write_results
from tests.support.require import unavailable
from tests.unit.sr_writer import metastasis_case as case
from tests.unit.sr_writer.synthetic import make_series, write_series

VOLUME, LONG_AXIS, CERTAINTY = ("118565006", "SCT"), ("103339001", "SCT"), ("111012", "DCM")
CHANGE, TOTAL = ("111021", "DCM"), ("255619001", "SCT")
DIAMCHG, VOLCHG = ("DIAMCHG", "99RADNODE"), ("VOLCHG", "99RADNODE")
SIDES = {"left": ("7771000", "SCT"), "right": ("24028007", "SCT"), "midline": ("51440002", "SCT")}


def _path(out: WrittenObjects, key: str) -> Path:
    path = out.paths[key]
    assert isinstance(path, Path), key
    return path


def _require(tool: str) -> None:
    if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").is_file():
        unavailable(f"{tool} not installed")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("metastases")
    paths = write_series(make_series("met"), tmp / "src")
    result = case.result()
    out = write_results(
        job_id="job-metastases",
        result=result,
        model=case.MODEL,
        out_dir=tmp / "out",
        application="Brain metastases",
        source_series={"t1c": paths},
        prior_results=case.PRIOR_ROWS,
        trend_keys=[COUNT, TOTAL_VOLUME],
    )
    return result, out


def test_every_lesion_reads_back_from_the_sr(written) -> None:  # type: ignore[no-untyped-def]
    result, out = written
    groups = groups_by_tracking_id(_path(out, "sr"))
    comparison = result.extra["lesion_comparison"]
    # One group per lesion (by track), one per resolved lesion, one for the study; no per-segment duplicates.
    assert set(groups) == {"Lesion 2", "Lesion 8", "Lesion 5", "Lesion 7", "Brain metastases"}
    seg = pydicom.dcmread(_path(out, "seg"), stop_before_pixels=True)
    labels = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    for les in result.extra["lesions"]:
        track, uid = result.extra["tracking"][les.index]
        g = groups[f"Lesion {track}"]
        assert g.tracking_uid == uid
        assert g.finding_type == ("14799000", "SCT") and g.finding_category == ("49755003", "SCT")
        site, side, modifier = g.sites[0]
        assert site == (REGION_SITES[les.region][0], "SCT") and side == SIDES[les.hemisphere]
        assert modifier == (("795002", "SCT") if les.region == "deep grey matter" else None)
        assert (g.value(VOLUME).value, g.value(VOLUME).unit) == (pytest.approx(les.volumes_ml["whole_tumor"]), "ml")
        assert (g.value(LONG_AXIS).value, g.value(LONG_AXIS).unit) == (pytest.approx(les.max_axial_diameter_mm), "mm")
        assert (g.value(CERTAINTY).value, g.value(CERTAINTY).unit) == (pytest.approx(les.confidence), "1")
        change = comparison.changes[les.index]
        code = STATUS_CODES[change.status]
        assert g.evaluations[CHANGE] == (code[0], code[1])
        if change.status is LesionStatus.NEW:
            assert DIAMCHG not in g.measurements and VOLCHG not in g.measurements
        else:
            assert (g.value(DIAMCHG).value, g.value(DIAMCHG).unit) == (pytest.approx(change.diameter_change_pct), "%")
            assert (g.value(VOLCHG).value, g.value(VOLCHG).unit) == (pytest.approx(change.volume_change_pct), "%")
        # The group references the lesion's own SEG segment.
        assert g.segment == (str(seg.SOPInstanceUID), next(n for n, lab in labels.items() if lab == f"Lesion {les.index}"))
    statuses = {t: groups[f"Lesion {t}"].evaluations[CHANGE][0] for t in (2, 8, 5)}
    assert statuses == {2: "15454001", 8: "129721008", 5: "129723006"}  # enlarging, new, stable
    resolved = comparison.resolved[0]
    g = groups[f"Lesion {resolved.track}"]
    assert g.tracking_uid == resolved.tracking_uid and g.segment is None and g.measurements == {}
    assert g.evaluations[CHANGE] == ("413322009", "SCT")
    assert g.sites == [(("119238007", "SCT"), SIDES["midline"], None)]
    study = groups["Brain metastases"]
    lesions = result.extra["lesions"]
    assert study.value(("246206008", "SCT")).value == 3
    assert study.value(VOLUME, TOTAL).value == pytest.approx(sum(les.volumes_ml["whole_tumor"] for les in lesions), abs=1e-3)
    assert study.value(LONG_AXIS, TOTAL).value == pytest.approx(14.0)  # only lesion 1 is ≥ 10 mm
    # The private concepts (the two change percentages) are declared.
    ds = pydicom.dcmread(_path(out, "sr"))
    assert [str(s.CodingSchemeDesignator) for s in ds.CodingSchemeIdentificationSequence] == ["99RADNODE"]


def test_a_baseline_exam_writes_no_change(tmp_path: Path) -> None:
    paths = write_series(make_series("met0"), tmp_path / "src")
    out = write_results(job_id="job-met-baseline", result=case.result(with_prior=False), model=case.MODEL, out_dir=tmp_path / "out",
                        application="Brain metastases", source_series={"t1c": paths}, render_pages=False)
    groups = groups_by_tracking_id(_path(out, "sr"))
    assert set(groups) == {"Lesion 2", "Lesion 8", "Lesion 5", "Brain metastases"}
    assert all(CHANGE not in g.evaluations and DIAMCHG not in g.measurements for g in groups.values())
    assert "CodingSchemeIdentificationSequence" not in pydicom.dcmread(_path(out, "sr"))


def test_the_seg_has_one_metastasis_segment_per_lesion(written) -> None:  # type: ignore[no-untyped-def]
    result, out = written
    seg = pydicom.dcmread(_path(out, "seg"), stop_before_pixels=True)
    assert seg.SegmentationType == "BINARY" and len(seg.SegmentSequence) == 3
    for d in seg.SegmentSequence:
        k = int(str(d.SegmentLabel).split()[-1])
        track, uid = result.extra["tracking"][k]
        assert (d.SegmentedPropertyTypeCodeSequence[0].CodeValue, d.SegmentedPropertyCategoryCodeSequence[0].CodeValue) == (
            "14799000", "49755003")
        assert (str(d.TrackingID), str(d.TrackingUID)) == (f"Lesion {track}", uid)


def test_a_labelmap_seg_holds_the_lesions_too(tmp_path: Path) -> None:
    paths = write_series(make_series("met-lm"), tmp_path / "src")
    out = write_results(job_id="job-met-labelmap", result=case.result(), model=case.MODEL, out_dir=tmp_path / "out",
                        application="Brain metastases", source_series={"t1c": paths}, segmentation_type="LABELMAP", render_pages=False)
    seg = pydicom.dcmread(_path(out, "seg"), stop_before_pixels=True)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage
    assert {str(d.SegmentLabel) for d in seg.SegmentSequence if int(d.SegmentNumber) > 0} == {"Lesion 1", "Lesion 2", "Lesion 3"}
    assert len(groups_by_tracking_id(_path(out, "sr"))) == 5


def test_thumbnails_are_written_and_sent(written) -> None:  # type: ignore[no-untyped-def]
    _, out = written
    names = [p.name for p in out.paths["lesion_thumbnails"]]
    assert names == ["lesion_001.png", "lesion_002.png", "lesion_003.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in out.paths["lesion_thumbnails"])
    titles = [str(pydicom.dcmread(p, stop_before_pixels=True).ImageComments) for p in out.paths["secondary_captures"]]
    assert any("Lesion 2: left cerebellum, 14.0 mm" in t for t in titles)
    assert sum("Key image: Lesion " in t for t in titles) == 3


def test_the_pdf_lists_lesions_statuses_and_the_trend(written) -> None:  # type: ignore[no-untyped-def]
    _require("pdftotext")
    _, out = written
    text = subprocess.run(["pdftotext", "-layout", str(_path(out, "pdf")), "-"], capture_output=True, text=True, check=True).stdout
    assert "Brain metastases (lesion by lesion)" in text
    rows = {line.split("(track")[1].split(")")[0].strip(): line for line in text.splitlines() if "(track" in line}
    assert "left cerebellum" in rows["2"] and "14.0" in rows["2"] and "0.91" in rows["2"] and "0.97" in rows["2"]
    assert "enlarging" in rows["2"] and "+40 % / +128 %" in rows["2"]
    assert "new" in rows["8"] and "right frontal" in rows["8"]
    assert "stable" in rows["5"] and "-4 % / +5 %" in rows["5"]
    assert "track 7" in text and "resolved" in text and "brainstem (midline)" in text
    assert "3 lesion(s), total volume 1.24 mL" in text and "14.0 mm" in text and "2024-01-10" in text
    assert "Trend: lesion count and total volume" in text
    assert "not for clinical use" in text.lower() and "Automated measurement" in text
    assert "Lesion 1 volume" not in text  # the per-lesion segment volumes are in the lesion table only


def test_the_rows_read_back_for_the_job_page(written) -> None:  # type: ignore[no-untyped-def]
    result, _ = written
    stored = [{"name": m.name, "value": m.value, "unit": m.unit, "code": "|".join(m.code) if m.code else None}
              for m in result.measurements]
    block = read_lesion_rows(stored)
    assert block is not None and block["count"] == 3 and block["prior_count"] == 3
    assert block["total_volume_ml"] == pytest.approx(1.241) and block["sum_diameters_mm"] == pytest.approx(14.0)
    by_track = {les["track"]: les for les in block["lesions"]}
    assert {t: les["status"] for t, les in by_track.items()} == {2: "enlarging", 8: "new", 5: "stable"}
    assert by_track[2]["location"] == "left cerebellum" and by_track[2]["diameter_mm"] == 14.0
    assert by_track[2]["confidence"] == pytest.approx(0.97) and by_track[2]["diameter_change_pct"] == pytest.approx(40.0)
    assert by_track[8]["diameter_change_pct"] is None
    assert block["resolved"] == [{"track": 7, "status": "resolved", "location": "brainstem (midline)",
                                  "prior_diameter_mm": 6.0, "prior_volume_ml": pytest.approx(0.092)}]
    names = {m.name for m in result.measurements}
    assert {lesion_row(1, "status"), resolved_row(7, "status"), SUM_DIAMETERS} <= names


def test_every_object_passes_dciodvfy(written) -> None:  # type: ignore[no-untyped-def]
    _require("dciodvfy")
    _, out = written
    for path in out.dicom_files():
        errors, warnings = dciodvfy_report(path)
        assert errors == [], f"{path.name}: {errors}"
        # The only warnings allowed: the declared private scheme of the two change concepts.
        assert all("99RADNODE" in w for w in warnings), f"{path.name}: {warnings}"
