"""Lesion-by-lesion follow-up of metastases: matching in the brain frame, statuses, tracking UIDs, rows."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
import pytest

from radnode.analyzers.base import AnalyzerResult
from radnode.analyzers.metastasis.frame import brain_frame, location
from radnode.analyzers.metastasis.measure import measure_lesions, renumber_by_size
from radnode.analyzers.metastasis.tracking import (
    PRIOR_ROW_NAMES,
    annotate,
    compare,
    match_radius_mm,
    prior_exams,
    result_rows,
    tracking_uid,
)
from radnode.model.lesion_rows import read_lesion_rows
from radnode.model.lesions import Lesion, LesionStatus, lesion_status
from radnode.uids import is_valid_uid


def _lesion(index: int, frame: tuple[float, float, float], diameter: float, volume: float) -> Lesion:
    return Lesion(index=index, volumes_ml={"whole_tumor": volume}, centroid_lps_mm=frame, offset_from_brain_mm=frame,
                  hemisphere="left", region="frontal", max_axial_diameter_mm=diameter, confidence=0.9,
                  brain_frame_mm=frame)


def _rows_of(lesions: list[Lesion], key: str = "p") -> dict[str, float]:
    """The job-store rows one exam leaves (as the worker reads them back)."""
    tracks, comparison = compare(lesions, [], key, "metastasis")
    return {m.name: m.value for m in result_rows(lesions, tracks, comparison)}


@pytest.mark.parametrize(("now", "before", "status"), [
    (12.0, 10.0, LesionStatus.ENLARGING),  # +20 %, +2 mm
    (11.5, 10.0, LesionStatus.STABLE),  # +15 %
    (4.5, 3.0, LesionStatus.STABLE),  # +50 % but 1.5 mm: measurement noise on a tiny lesion
    (5.0, 3.0, LesionStatus.ENLARGING),
    (7.0, 10.0, LesionStatus.SHRINKING),  # −30 %
    (7.5, 10.0, LesionStatus.STABLE),
])
def test_status_follows_rano_bm_thresholds_with_an_absolute_floor(now: float, before: float, status: LesionStatus) -> None:
    assert lesion_status(now, before) is status


def test_follow_up_names_new_enlarging_stable_shrinking_and_resolved_and_keeps_tracking_uids() -> None:
    baseline = [_lesion(1, (30.0, 10.0, 20.0), 15.0, 1.2), _lesion(2, (-35.0, -40.0, -25.0), 8.0, 0.2),
                _lesion(3, (10.0, 50.0, 30.0), 6.0, 0.1), _lesion(4, (-20.0, 20.0, 45.0), 5.0, 0.05)]
    prior_rows = [("20250110", _rows_of(baseline))]
    # Follow-up: lesion 1 grew, 2 moved by 3 mm (registration) and is stable, 3 shrank, 4 resolved, one new.
    now = [_lesion(1, (31.0, 11.0, 19.0), 21.0, 2.9), _lesion(2, (-33.0, -38.0, -26.0), 8.5, 0.21),
           _lesion(3, (9.0, 51.0, 30.0), 4.0, 0.03), _lesion(4, (-50.0, 0.0, 10.0), 4.0, 0.03)]
    result = AnalyzerResult(measurements=[], extra={"lesions": now})
    rows = annotate(result, prior_rows, "p", "metastasis")
    comparison = result.extra["lesion_comparison"]
    assert comparison.prior_date == "2025-01-10" and comparison.prior_count == 4
    statuses = {i: c.status for i, c in comparison.changes.items()}
    assert statuses == {1: LesionStatus.ENLARGING, 2: LesionStatus.STABLE, 3: LesionStatus.SHRINKING, 4: LesionStatus.NEW}
    tracks = result.extra["tracking"]
    assert [tracks[i][0] for i in (1, 2, 3, 4)] == [1, 2, 3, 5]  # the new lesion takes the next free number
    assert tracks[1][1] == tracking_uid("p", "metastasis", 1) and is_valid_uid(tracks[1][1])
    assert [r.track for r in comparison.resolved] == [4]
    assert comparison.resolved[0].tracking_uid == tracking_uid("p", "metastasis", 4)
    assert comparison.changes[1].diameter_change_pct == 40.0 and comparison.changes[1].prior_volume_ml == 1.2
    summary = result.extra["summary"]
    assert [les["status"] for les in summary["lesions"]] == ["enlarging", "stable", "shrinking", "new"]
    assert summary["resolved"][0]["status"] == "resolved" and summary["resolved"][0]["track"] == 4
    by_name = {m.name: m for m in rows}
    assert by_name["met_4_track"].value == 5.0 and by_name["met_4_status"].code[0] == "129721008"  # SCT new finding
    assert {"met_1_frame_x", "met_1_diameter", "met_1_track", "met_lesion_count"} <= {m.name for m in rows} & set(PRIOR_ROW_NAMES)
    stored = read_lesion_rows([{"name": m.name, "value": m.value, "unit": m.unit,
                                "code": "|".join(m.code) if m.code else None} for m in rows])
    assert [les["status"] for les in stored["lesions"]] == ["enlarging", "stable", "shrinking", "new"]
    assert [r["track"] for r in stored["resolved"]] == [4]
    # The third exam matches against the second: the new lesion keeps number 5, lesion 4 stays retired.
    third_rows = [("20250110", _rows_of(baseline)), ("20250410", {m.name: m.value for m in result.measurements}
                                                     | {"met_lesion_count": 4.0, "met_total_volume": 3.17})]
    third = AnalyzerResult(measurements=[], extra={"lesions": [_lesion(1, (-50.5, 0.5, 10.0), 4.0, 0.03)]})
    annotate(third, third_rows, "p", "metastasis")
    assert third.extra["tracking"][1][0] == 5
    assert {r.track for r in third.extra["lesion_comparison"].resolved} == {1, 2, 3}


def test_matching_is_one_to_one_and_prefers_the_closest_pairing() -> None:
    prior = prior_exams([("20250101", _rows_of([_lesion(1, (0.0, 0.0, 0.0), 6.0, 0.1), _lesion(2, (8.0, 0.0, 0.0), 6.0, 0.1)]))])
    # Greedy nearest-first would give lesion A (at 5) prior 2 and leave B unmatched; the assignment pairs both.
    now = [_lesion(1, (5.0, 0.0, 0.0), 6.0, 0.1), _lesion(2, (-1.0, 0.0, 0.0), 6.0, 0.1)]
    tracks, comparison = compare(now, prior, "p", "metastasis")
    assert {tracks[1][0], tracks[2][0]} == {1, 2} and tracks[2][0] == 1 and not comparison.resolved
    assert match_radius_mm(4.0, 3.0) == 7.0 and match_radius_mm(30.0, 20.0) == 15.0


def test_far_lesion_is_new_not_matched() -> None:
    prior = prior_exams([("20250101", _rows_of([_lesion(1, (0.0, 0.0, 0.0), 5.0, 0.05)]))])
    tracks, comparison = compare([_lesion(1, (12.0, 0.0, 0.0), 5.0, 0.05)], prior, "p", "metastasis")
    assert comparison.changes[1].status is LesionStatus.NEW and tracks[1][0] == 2
    assert [r.track for r in comparison.resolved] == [1]


def test_without_priors_every_lesion_is_baseline() -> None:
    result = AnalyzerResult(measurements=[], extra={"lesions": [_lesion(1, (0.0, 0.0, 0.0), 5.0, 0.05)]})
    annotate(result, [], "p", "metastasis")
    assert result.extra["lesion_comparison"] is None
    assert result.extra["summary"]["lesions"][0]["status"] == "baseline" and result.extra["summary"]["resolved"] == []


def _sphere_image(centres: list[tuple[float, float, float]], radii: list[float], rotation_deg: float = 0.0) -> sitk.Image:
    """A label image (1 mm, 120³ around the origin) with one sphere per centre, ids in the given order."""
    img = sitk.Image([120, 120, 120], sitk.sitkUInt16)
    img.SetOrigin((-60.0, -60.0, -60.0))
    arr = np.zeros((120, 120, 120), np.uint16)
    zz, yy, xx = np.mgrid[0:120, 0:120, 0:120] - 60.0
    for k, (c, r) in enumerate(zip(centres, radii), start=1):
        arr[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2 <= r * r] = k
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def test_lesions_are_measured_and_numbered_by_size() -> None:
    labels = _sphere_image([(20.0, 0.0, 0.0), (-20.0, 10.0, 5.0)], [2.0, 6.0])
    arr, conf = renumber_by_size(sitk.GetArrayFromImage(labels).astype(np.int32), {1: 0.7, 2: 0.95})
    assert conf == {1: 0.95, 2: 0.7}
    img = sitk.GetImageFromArray(arr.astype(np.uint16))
    img.CopyInformation(labels)
    lesions = measure_lesions(img, conf, None)
    assert [les.index for les in lesions] == [1, 2]
    big, small = lesions
    assert big.centroid_lps_mm == pytest.approx((-20.0, 10.0, 5.0), abs=0.05)
    assert big.volumes_ml["whole_tumor"] == pytest.approx(4 / 3 * math.pi * 6**3 / 1000, rel=0.08)
    assert 11.0 <= big.max_axial_diameter_mm <= 13.5 and 3.0 <= small.max_axial_diameter_mm <= 5.5
    assert big.confidence == 0.95 and big.brain_frame_mm is None
    rows = {m.name: m.value for m in result_rows(lesions, {1: (1, "1.2"), 2: (2, "1.3")}, None)}
    assert rows["met_lesion_count"] == 2 and rows["met_sum_diameters"] == big.max_axial_diameter_mm


def test_brain_frame_undoes_head_position_to_a_couple_of_millimetres() -> None:
    """One brain mask placed two ways in the scanner gives the same frame coordinates for the same anatomy."""
    from radnode.synth.glioma import load_template

    tpl = load_template(2.0, "mni152-warp2")
    mask = sitk.GetImageFromArray(tpl.brain.astype(np.uint8))
    mask.SetSpacing((2.0, 2.0, 2.0))
    mask.SetOrigin(tpl.origin)
    mask.SetDirection(tpl.direction)
    anatomy = np.array([[30.0, -20.0, 40.0], [-10.0, 50.0, 0.0], [0.0, 20.0, -30.0], [20.0, 60.0, 10.0]])
    move = sitk.Euler3DTransform()
    move.SetCenter((0.0, -20.0, 10.0))
    move.SetRotation(math.radians(12), math.radians(-6), math.radians(4))
    move.SetTranslation((7.0, -12.0, 20.0))
    scanner = sitk.Image([140, 160, 140], sitk.sitkUInt8)  # a field of view that holds the moved head whole
    scanner.SetSpacing((1.5, 1.5, 1.5))
    scanner.SetOrigin((-105.0, -140.0, -95.0))
    moved = sitk.Resample(mask, scanner, move, sitk.sitkLinear, 0) > 0.5
    inverse = move.GetInverse()
    in_moved = np.array([inverse.TransformPoint(tuple(p)) for p in anatomy])
    a, b = brain_frame(mask), brain_frame(moved)
    err = np.linalg.norm(a.to_frame(anatomy) - b.to_frame(in_moved), axis=1)
    assert err.max() < 2.0, err
    np.testing.assert_allclose(b.from_frame(b.to_frame(in_moved)), in_moved, atol=1e-6)
    # In the frame, the template's brainstem and cerebellum are where the location boxes expect them.
    assert location(np.array([0.0, 30.0, -30.0]))[1] == "brainstem"
    assert location(np.array([-25.0, 60.0, -35.0])) == ("right", "cerebellum")
