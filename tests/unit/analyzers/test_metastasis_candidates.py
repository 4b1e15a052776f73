"""The metastasis candidate step on hand-made probability maps, and its manifest block.

Why: the candidate step decides which small lesions a report counts; a change
that dropped 3 mm lesions, split a lesion at a probability dip or let a
vessel through would not show in a Dice figure, only in missed or false
metastases. Its thresholds come from the manifest, so a bad value must be a
clear error at load, not a silent default.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from radnode.analyzers.metastasis.candidates import (
    Candidate,
    CandidateRule,
    elongation,
    find_candidates,
    flatness,
    rule_from_manifest,
)
from radnode.analyzers.runtime import ModelError, read_manifest

SP = (1.0, 1.0, 1.0)


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float,
         sp: tuple[float, float, float] = SP) -> np.ndarray:
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((zz, yy, xx), centre, sp))
    return d2 <= radius**2


def rule(**kw: Any) -> CandidateRule:
    base: dict[str, Any] = {"seed_threshold": 0.7, "grow_threshold": 0.4}
    base.update(kw)
    return CandidateRule(**base)


def test_a_3mm_sphere_is_kept_with_its_volume_and_confidence() -> None:
    prob = np.zeros((24, 24, 24), np.float32)
    sphere = ball(prob.shape, (12, 12, 12), 1.5)  # 3 mm diameter at 1 mm
    prob[sphere] = 0.8
    prob[12, 12, 12] = 0.93
    lesion_map, cands = find_candidates(prob, None, SP, rule(min_volume_mm3=5.0, max_elongation=3.0))
    assert len(cands) == 1
    (c,) = cands
    assert isinstance(c, Candidate) and c.id == 1
    assert c.voxels == int(sphere.sum()) and c.volume_mm3 == pytest.approx(sphere.sum())
    assert c.confidence == pytest.approx(0.93)  # confidence = highest probability
    assert np.allclose(c.centroid_zyx, (12, 12, 12), atol=0.01)
    assert lesion_map.dtype == np.int32 and set(np.unique(lesion_map)) == {0, 1}
    assert (lesion_map == 1).sum() == sphere.sum()


def test_spacing_scales_volume() -> None:
    prob = np.zeros((20, 20, 20), np.float32)
    prob[8:12, 8:12, 8:12] = 0.9
    _, cands = find_candidates(prob, None, (2.0, 0.5, 0.5), rule())
    assert cands[0].voxels == 64 and cands[0].volume_mm3 == pytest.approx(64 * 0.5)


def test_hysteresis_joins_a_dip_and_drops_low_only_components() -> None:
    prob = np.zeros((20, 40, 20), np.float32)
    prob[8:12, 5:25, 8:12] = 0.5  # one component above grow, seeded at one end only
    prob[9:11, 6:8, 9:11] = 0.9
    prob[8:12, 30:35, 8:12] = 0.6  # above grow, never reaches the seed threshold
    lesion_map, cands = find_candidates(prob, None, SP, rule())
    assert len(cands) == 1
    assert cands[0].voxels == 4 * 20 * 4  # grown along the whole 0.5 bar
    assert lesion_map[10, 32, 10] == 0


def test_26_connectivity_joins_diagonal_voxels() -> None:
    prob = np.zeros((10, 10, 10), np.float32)
    for i in range(2, 7):
        prob[i, i, i] = 0.9
    _, cands = find_candidates(prob, None, SP, rule())
    assert len(cands) == 1 and cands[0].voxels == 5


def test_sorted_by_volume_largest_first() -> None:
    prob = np.zeros((40, 40, 40), np.float32)
    prob[ball(prob.shape, (8, 8, 8), 2)] = 0.75
    prob[ball(prob.shape, (28, 28, 28), 5)] = 0.8
    prob[ball(prob.shape, (8, 30, 10), 3)] = 0.99
    lesion_map, cands = find_candidates(prob, None, SP, rule())
    assert [c.id for c in cands] == [1, 2, 3]
    assert [c.voxels for c in cands] == sorted((c.voxels for c in cands), reverse=True)
    assert lesion_map[28, 28, 28] == 1 and lesion_map[8, 30, 10] == 2 and lesion_map[8, 8, 8] == 3
    assert cands[1].confidence == pytest.approx(0.99)


def test_min_volume_and_min_confidence() -> None:
    prob = np.zeros((30, 30, 30), np.float32)
    prob[5, 5, 5] = 0.95  # 1 voxel
    prob[ball(prob.shape, (20, 20, 20), 3)] = 0.75
    _, cands = find_candidates(prob, None, SP, rule(min_volume_mm3=4.0))
    assert len(cands) == 1 and cands[0].voxels > 4
    _, cands = find_candidates(prob, None, SP, rule(min_confidence=0.8))
    assert len(cands) == 1 and cands[0].voxels == 1


def test_a_tube_is_rejected_by_shape_and_a_ball_is_not() -> None:
    prob = np.zeros((20, 60, 20), np.float32)
    prob[9:11, 5:45, 9:11] = 0.9  # a 2 mm thick, 40 mm long vessel
    prob[ball(prob.shape, (10, 52, 10), 3)] = 0.9
    assert elongation(np.argwhere(prob[:, :47] > 0), SP) > 5
    _, cands = find_candidates(prob, None, SP, rule())
    assert len(cands) == 2
    _, cands = find_candidates(prob, None, SP, rule(max_elongation=3.0))
    assert len(cands) == 1 and cands[0].elongation < 1.5
    # A small component is too few voxels to have a shape: kept whatever its axes.
    _, cands = find_candidates(prob, None, SP, rule(max_elongation=3.0, elongation_min_volume_mm3=1000.0))
    assert len(cands) == 2


def test_a_plate_along_the_surface_is_rejected_by_shape_and_depth_and_a_deep_ball_is_not() -> None:
    """Dural enhancement: a thin sheet just inside the brain mask's edge; a metastasis: a ball deeper in."""
    shape = (48, 48, 48)
    brain = ball(shape, (24, 24, 24), 20.0)
    prob = np.zeros(shape, np.float32)
    plate = np.zeros(shape, bool)
    plate[5:7, 16:32, 16:32] = True  # 2 × 16 × 16 mm at 1–3 mm depth
    plate &= brain
    lesion = ball(shape, (30, 24, 24), 2.5)  # a 5 mm ball ~14 mm deep
    prob[plate] = 0.95
    prob[lesion] = 0.95
    pts = np.argwhere(plate)
    assert flatness(pts, SP) > 4.0 and flatness(np.argwhere(lesion), SP) < 1.3
    _, kept_all = find_candidates(prob, brain, SP, rule())
    assert len(kept_all) == 2
    _, by_shape = find_candidates(prob, brain, SP, rule(max_flatness=3.0))
    _, by_depth = find_candidates(prob, brain, SP, rule(min_depth_mm=6.0))
    for cands in (by_shape, by_depth):
        assert len(cands) == 1 and np.allclose(cands[0].centroid_zyx, (30, 24, 24), atol=0.01)


def test_outside_the_brain_is_ignored() -> None:
    prob = np.zeros((20, 20, 20), np.float32)
    prob[2:5, 2:5, 2:5] = 0.95
    brain = np.zeros(prob.shape, bool)
    brain[6:, 6:, 6:] = True
    lesion_map, cands = find_candidates(prob, brain, SP, rule())
    assert cands == [] and not lesion_map.any()


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="probability must be"):
        find_candidates(np.zeros((4, 4), np.float32), None, SP, rule())
    with pytest.raises(ValueError, match="differ in shape"):
        find_candidates(np.zeros((4, 4, 4), np.float32), np.ones((4, 4, 5), bool), SP, rule())
    with pytest.raises(ValueError, match="spacing_zyx"):
        find_candidates(np.zeros((4, 4, 4), np.float32), None, (1.0, 0.0, 1.0), rule())


# -- the manifest's lesions: block ------------------------------------------------------------

def write_manifest(folder: Path, **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "name": "met-test", "version": "0.1.0", "task": "segmentation", "application": "metastasis",
        "inputs": ["t1c"], "spacing_mm": [1.0, 1.0, 1.0], "patch_size": [64, 64, 64],
        "normalization": "zscore-brain", "output": "logits",
        "labels": [{"value": 0, "name": "background"}, {"value": 1, "name": "metastasis"}],
        "lesions": {"seed_threshold": 0.7, "grow_threshold": 0.4, "min_volume_mm3": 5.0,
                    "max_elongation": 3.0},
        "sha256": hashlib.sha256(b"x").hexdigest(),
    }
    manifest.update(overrides)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def test_rule_comes_from_the_manifest(tmp_path: Path) -> None:
    m = read_manifest(write_manifest(tmp_path / "m"))
    r = rule_from_manifest(m)
    assert (r.seed_threshold, r.grow_threshold, r.min_volume_mm3, r.max_elongation) == (0.7, 0.4, 5.0, 3.0)
    assert r.min_confidence == 0.0


def test_manifest_without_lesions_block_is_a_clear_error(tmp_path: Path) -> None:
    m = read_manifest(write_manifest(tmp_path / "m", lesions=None))
    with pytest.raises(ModelError, match="no 'lesions:' block"):
        rule_from_manifest(m)


@pytest.mark.parametrize(
    ("lesions", "expected"),
    [
        ({"seed_threshold": 1.2, "grow_threshold": 0.4}, "lesions.seed_threshold"),
        ({"seed_threshold": 0.5, "grow_threshold": 0.7}, "grow_threshold (0.7) must not exceed seed_threshold (0.5)"),
        ({"seed_threshold": 0.7, "grow_threshold": 0.4, "min_volume_mm3": -1}, "lesions.min_volume_mm3"),
        ({"seed_threshold": 0.7, "grow_threshold": 0.4, "max_elongation": 0.5}, "lesions.max_elongation"),
        ({"seed_threshold": 0.7, "grow_threshold": 0.4, "min_volume": 3}, "unknown key 'lesions.min_volume'"),
        ({"grow_threshold": 0.4}, "missing required key 'lesions.seed_threshold'"),
    ],
)
def test_bad_lesions_block_names_the_field(tmp_path: Path, lesions: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelError) as exc:
        read_manifest(write_manifest(tmp_path / "m", lesions=lesions))
    assert expected in str(exc.value)


def test_lesions_block_only_for_segmentation(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lesions: only read for segmentation models"):
        read_manifest(write_manifest(tmp_path / "m", task="classification"))
