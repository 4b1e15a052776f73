"""Glioma post-processing: the island rule, lesion grouping, location and the
RANO bidimensional measurement, on label maps whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from radnode.analyzers.glioma.lesions import (
    IslandRule,
    bidimensional,
    clean_label_map,
    coarse_location,
    find_lesions,
    physical_points,
)
from radnode.analyzers.glioma.measure import glioma_measurements, sum_of_products
from radnode.model.lesions import Bidimensional

SHAPE = (120, 160, 140)  # z, y, x at 1 mm


def _ball(centre: tuple[int, int, int], radius: float, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def _tumour(labels: np.ndarray, centre: tuple[int, int, int], r: float) -> None:
    """Oedema shell, enhancing rim, necrotic centre."""
    labels[_ball(centre, r)] = 2
    labels[_ball(centre, 0.6 * r)] = 3
    labels[_ball(centre, 0.35 * r)] = 1


def _image(labels: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(labels.astype(np.uint8))
    img.SetOrigin((-70.0, -90.0, -50.0))  # LPS; identity direction: x→left, y→posterior, z→superior
    return img


@pytest.fixture()
def case() -> tuple[np.ndarray, np.ndarray]:
    brain = _ball((60, 80, 70), 58)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    _tumour(labels, (60, 60, 90), 14)  # main tumour, patient's left (x > centre)
    labels[_ball((60, 60, 110), 4) & ~(labels > 0)] = 2  # oedema just beside it (≤ 10 mm): same lesion
    labels[_ball((60, 110, 110), 7)] = 2  # oedema-only island ~50 mm away: false positive
    labels[_ball((30, 100, 70), 1.2)] = 3  # a tiny speck
    labels[_ball((60, 80, 3), 3)] = 2  # outside the brain (scalp)
    _tumour(labels, (75, 110, 35), 8)  # a second enhancing focus ~60 mm away: multifocal, kept
    return labels, brain


def test_the_island_rule_keeps_tumour_and_drops_what_cannot_be(case) -> None:
    labels, brain = case
    clean, lesion_map, report = clean_label_map(labels, (1.0, 1.0, 1.0), brain)
    assert report.components_before == 6
    assert report.lesions == 2
    reasons = sorted(d["reason"] for d in report.dropped)
    assert reasons == ["no tumour core and far from one", "outside the brain", "tiny"]
    assert not clean[_ball((60, 110, 110), 7)].any()
    assert not clean[_ball((60, 80, 3), 3)].any()
    assert clean[60, 60, 110] == 2 and lesion_map[60, 60, 110] == lesion_map[60, 60, 90] == 1  # attached oedema
    assert lesion_map[75, 110, 35] == 2  # the smaller focus is lesion 2
    # Nothing that was kept changed its label.
    assert np.array_equal(clean[clean > 0], labels[clean > 0])


def test_without_a_core_the_largest_component_is_the_tumour() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[_ball((60, 60, 60), 12)] = 2
    labels[_ball((60, 120, 60), 5)] = 2
    clean, _, report = clean_label_map(labels, (1.0, 1.0, 1.0), None)
    assert report.lesions == 1 and clean[60, 60, 60] == 2 and clean[60, 120, 60] == 0


def test_rule_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="attach_mm"):
        IslandRule(attach_mm=-1)
    with pytest.raises(ValueError, match="brain_mask"):
        clean_label_map(np.zeros((4, 4, 4)), (1, 1, 1), np.zeros((3, 3, 3), dtype=bool))


def test_lesions_are_measured_and_located(case) -> None:
    labels, brain = case
    clean, lesion_map, _ = clean_label_map(labels, (1.0, 1.0, 1.0), brain)
    image = _image(clean)
    lesions = find_lesions(image, lesion_map, brain)
    assert [les.index for les in lesions] == [1, 2]
    main, second = lesions
    assert main.hemisphere == "left" and second.hemisphere == "right"
    assert main.region == "frontal"  # y = 60 of a brain spanning 22–138 (anterior is small y)
    assert main.volumes_ml["whole_tumor"] == pytest.approx(float((lesion_map == 1).sum()) / 1000, abs=1e-3)
    assert main.volumes_ml["tumor_core"] == pytest.approx(main.volumes_ml["enhancing"] + main.volumes_ml["necrotic"], abs=2e-3)
    c = physical_points(image, lesion_map == 1).mean(axis=0)
    assert np.allclose(main.centroid_lps_mm, c, atol=0.01)
    # Core of radius 8.4 mm: diameters between voxel centres of a digital disc, ~16 mm.
    assert main.bidimensional is not None and 15.5 <= main.bidimensional.longest_mm <= 17.5
    assert main.bidimensional.perpendicular_mm <= main.bidimensional.longest_mm
    assert main.bidimensional.measurable
    measures, summary = glioma_measurements(image, lesions)
    names = {m.name: m for m in measures}
    assert names["lesion_count"].value == 2
    assert names["rano_sum_of_products"].value == pytest.approx(sum_of_products(lesions), abs=0.05)
    assert names["lesion_1_rano_product"].value == pytest.approx(main.bidimensional.product_mm2, abs=0.05)
    assert summary["max_axial_diameter_mm"] == max(les.max_axial_diameter_mm for les in lesions)


def test_bidimensional_of_an_ellipse_and_a_rotated_rectangle() -> None:
    # An axial ellipse (semi-axes 20 and 9 mm, rotated 30°) over 5 slabs.
    g = np.arange(-30, 30.5, 0.5)
    xx, yy = np.meshgrid(g, g)
    a = np.radians(30)
    u = xx * np.cos(a) + yy * np.sin(a)
    v = -xx * np.sin(a) + yy * np.cos(a)
    inside = (u / 20) ** 2 + (v / 9) ** 2 <= 1
    pts = np.concatenate([np.column_stack([xx[inside], yy[inside], np.full(inside.sum(), z)]) for z in range(5)])
    bi = bidimensional(pts, bin_mm=0.5)
    assert bi is not None
    assert bi.longest_mm == pytest.approx(40.0, abs=0.8)
    assert bi.perpendicular_mm == pytest.approx(18.0, abs=0.8)
    p0, p1 = np.array(bi.long_axis)
    direction = (p1 - p0)[:2] / np.linalg.norm((p1 - p0)[:2])
    assert abs(abs(direction @ [np.cos(a), np.sin(a)]) - 1) < 0.01
    q0, q1 = np.array(bi.perpendicular)
    assert abs((q1 - q0)[:2] @ direction) < 0.5  # perpendicular
    # The largest slab wins: a small slab above a big one.
    small = pts[pts[:, 2] == 0] * [0.3, 0.3, 1] + [0, 0, 10]
    assert bidimensional(np.concatenate([pts, small]), bin_mm=0.5).slab_z_mm in (0.0, 1.0, 2.0, 3.0, 4.0)


def test_measurable_follows_the_10_mm_rule() -> None:
    line = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    assert Bidimensional(12, 10, 0, line, line).measurable
    assert not Bidimensional(25, 9.9, 0, line, line).measurable
    with pytest.raises(ValueError, match="perpendicular_mm"):
        Bidimensional(10, 12, 0, line, line)


def test_coarse_location_hemisphere_and_lobes() -> None:
    frame = {"centroid": np.array([0.0, 0.0, 0.0]), "lo": np.array([-70.0, -100.0, -50.0]), "hi": np.array([70.0, 100.0, 70.0])}
    assert coarse_location(np.array([30.0, -80.0, 30.0]), frame) == ("left", "frontal")
    assert coarse_location(np.array([-30.0, 70.0, 40.0]), frame) == ("right", "occipital")
    assert coarse_location(np.array([-2.0, 20.0, 40.0]), frame) == ("midline", "parietal")
    assert coarse_location(np.array([40.0, 0.0, -10.0]), frame) == ("left", "temporal")
    assert coarse_location(np.array([10.0, 50.0, -40.0]), frame) == ("left", "posterior fossa")


def test_follow_up_rules_and_priors_without_rano_rows() -> None:
    from radnode.analyzers.glioma.followup import follow_up, prior_exams
    from radnode.model.lesions import Lesion, RanoCategory

    line = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))

    def lesion(i: int, longest: float, perp: float, offset: tuple[float, float, float]) -> Lesion:
        vols = {"whole_tumor": 5.0, "tumor_core": 2.0, "enhancing": 1.0, "necrotic": 1.0, "edema": 3.0}
        return Lesion(i, vols, (0, 0, 0), offset, "left", "frontal", longest, Bidimensional(longest, perp, 0, line, line))

    base = [("20240101", {"rano_sum_of_products": 400.0, "lesion_1_offset_x": 0.0, "lesion_1_offset_y": 0.0,
                          "lesion_1_offset_z": 0.0, "lesion_1_track": 1.0})]
    grown = follow_up([lesion(1, 25, 20, (3, 0, 0))], 500.0, prior_exams(base))
    assert grown.category is RanoCategory.PD and grown.change_vs_prior_pct == 25.0 and grown.tracks == {1: 1}
    stable = follow_up([lesion(1, 20, 19, (3, 0, 0))], 380.0, prior_exams(base))
    assert stable.category is RanoCategory.SD
    new = follow_up([lesion(1, 20, 19, (3, 0, 0)), lesion(2, 12, 11, (60, 0, 0))], 512.0, prior_exams(base))
    assert new.category is RanoCategory.PD and new.new_lesions == (2,) and new.tracks == {1: 1, 2: 2}
    gone = follow_up([], 0.0, prior_exams(base))
    assert gone.category is RanoCategory.CR
    # An exam measured before RANO rows existed gives volumes only, no category.
    assert follow_up([lesion(1, 25, 20, (0, 0, 0))], 500.0, prior_exams([("20230101", {"whole_tumor": 10.0})])) is None


def test_labels_from_probabilities_argmax_or_foreground_threshold() -> None:
    from radnode.analyzers.glioma.analyzer import labels_from_probabilities

    values = np.array([0, 1, 2, 3])
    # Three voxels: clear oedema; background 0.45 against a split foreground; background 0.6.
    probs = np.array([[0.1, 0.45, 0.6], [0.0, 0.05, 0.1], [0.8, 0.3, 0.2], [0.1, 0.2, 0.1]]).reshape(4, 1, 1, 3)
    assert labels_from_probabilities(probs, values, None).ravel().tolist() == [2, 0, 0]  # arg-max
    assert labels_from_probabilities(probs, values, 0.5).ravel().tolist() == [2, 2, 0]  # 1 - 0.45 >= 0.5
    assert labels_from_probabilities(probs, values, 0.7).ravel().tolist() == [2, 0, 0]
    assert labels_from_probabilities(probs, values, 0.0).ravel().tolist() == [2, 2, 2]  # foreground arg-max everywhere
