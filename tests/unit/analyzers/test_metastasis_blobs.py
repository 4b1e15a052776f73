"""The small-lesion detector: balls are lesions, tubes (vessels) and plates (dura) are not.

Why: the demo model misses 3-mm metastases; the detector beside it must add
them without adding the vessels and dura the model was taught to ignore, and
must never fire on the rim of a lesion the model already found or in the
brain mask's outer rim.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from radnode.analyzers.metastasis.blobs import find_blobs
from radnode.analyzers.metastasis.candidates import CandidateRule, find_candidates
from radnode.analyzers.runtime.manifests import SmallLesionSpec

N = 80
SP = (1.0, 1.0, 1.0)
SPEC = SmallLesionSpec(min_blobness=0.3, min_intensity=1.0)


def _dist(centre: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.ogrid[:N, :N, :N]
    return np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A brain ball with a 3.5-mm lesion, a vessel, a dural plate and noise, z-scored like the model input."""
    brain = _dist((40, 40, 40)) <= 36
    img = np.zeros((N, N, N), np.float32)
    parts = {"lesion": _dist((40, 30, 30)) <= 1.75}
    z, y, x = np.ogrid[:N, :N, :N]
    parts["vessel"] = ((y - 50) ** 2 + (x - 50) ** 2 <= 1.0) & (z > 20) & (z < 60)  # a 2-mm tube along z
    parts["plate"] = (x == 28) & (np.abs(y - 52) <= 6) & (np.abs(z - 40) <= 6)  # 1 voxel thick, 13 mm wide
    for m in parts.values():
        img[m] = 5.0
    from scipy import ndimage

    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 0.25, img.shape).astype(np.float32)
    return np.where(brain, img, 0).astype(np.float32), brain, parts


def test_a_ball_is_found_and_a_tube_and_a_plate_are_not() -> None:
    img, brain, parts = _scene(np.random.default_rng(0))
    blobs = find_blobs(img, brain, SP, SPEC, min_depth_mm=5.0)
    hit = {name: any(m[tuple(b.voxels.T)].any() for b in blobs) for name, m in parts.items()}
    assert hit == {"lesion": True, "vessel": False, "plate": False}, [(b.peak_zyx, b.blobness) for b in blobs]
    (ball,) = [b for b in blobs if parts["lesion"][tuple(b.voxels.T)].any()]
    # Its extent is the lesion's, within a voxel's shell: ~22 voxels drawn.
    assert 0.5 * parts["lesion"].sum() <= len(ball.voxels) <= 2.5 * parts["lesion"].sum()
    assert ball.confidence(SPEC) >= 0.5


def test_nothing_next_to_a_model_candidate_nor_in_the_rim() -> None:
    img, brain, parts = _scene(np.random.default_rng(1))
    near = _dist((40, 30, 34)) <= 2.0  # a model candidate whose edge is ~0.5 mm from the small lesion's
    spec = SPEC.model_copy(update={"exclusion_mm": 3.0})
    assert any(parts["lesion"][tuple(b.voxels.T)].any() for b in find_blobs(img, brain, SP, spec))
    assert not any(parts["lesion"][tuple(b.voxels.T)].any() for b in find_blobs(img, brain, SP, spec, exclude=near))
    # The lesion lies ~22 mm inside the brain (radius 36, 14 mm off centre): a 30-mm depth test removes it.
    assert not any(parts["lesion"][tuple(b.voxels.T)].any()
                   for b in find_blobs(img, brain, SP, SPEC, min_depth_mm=30.0))


def test_find_candidates_adds_blobs_after_the_model_ones_only_with_the_image_and_the_rule() -> None:
    img, brain, parts = _scene(np.random.default_rng(2))
    prob = np.zeros(img.shape, np.float32)
    big = _dist((40, 55, 30)) <= 5
    prob[big] = 0.95
    rule = CandidateRule(seed_threshold=0.8, grow_threshold=0.3, min_depth_mm=5.0)
    _, model_only = find_candidates(prob, brain, SP, rule, image=img)
    assert len(model_only) == 1  # no rule.small: the image is not read
    _, no_image = find_candidates(prob, brain, SP, rule.model_copy(update={"small": SPEC}))
    assert len(no_image) == 1
    lesion_map, cands = find_candidates(prob, brain, SP, rule.model_copy(update={"small": SPEC}), image=img)
    assert len(cands) == 2
    assert [c.id for c in cands] == [1, 2] and cands[0].volume_mm3 > cands[1].volume_mm3
    assert (lesion_map[parts["lesion"]] == 2).any() and (lesion_map[big] == 1).all()
    assert cands[1].confidence < 1.0


def test_the_manifest_block_is_closed_and_checked() -> None:
    with pytest.raises(ValidationError):
        SmallLesionSpec(min_blobness=0.3, min_intensity=1.0, min_blobnes=0.2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SmallLesionSpec(min_blobness=0.3, min_intensity=1.0, scales_mm=(0.0,))
    rule = CandidateRule.model_validate({"seed_threshold": 0.8, "grow_threshold": 0.2,
                                         "small": {"min_blobness": 0.3, "min_intensity": 1.2}})
    assert rule.small == SmallLesionSpec(min_blobness=0.3, min_intensity=1.2)


def test_round_and_small_tests_drop_stretched_and_broad_blobs() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(4)
    brain = _dist((40, 40, 40)) <= 36
    z, y, x = np.ogrid[:N, :N, :N]
    ball = _dist((40, 30, 30)) <= 1.75
    stretched = ((z - 40) / 1.6) ** 2 + ((y - 50) / 1.6) ** 2 + ((x - 50) / 4.0) ** 2 <= 1.0  # a vessel's bend
    img = np.zeros((N, N, N), np.float32)
    img[ball | stretched] = 5.0
    img = (ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 0.1, img.shape)).astype(np.float32)
    img[~brain] = 0

    def hits(spec: SmallLesionSpec) -> set[str]:
        found = find_blobs(img, brain, SP, spec)
        return {name for name, m in (("ball", ball), ("stretched", stretched))
                if any(m[tuple(b.voxels.T)].any() for b in found)}

    loose = SmallLesionSpec(min_blobness=0.2, min_intensity=1.0)
    assert hits(loose) == {"ball", "stretched"}
    assert hits(loose.model_copy(update={"max_elongation": 1.4})) == {"ball"}
    assert hits(loose.model_copy(update={"max_volume_mm3": 5.0})) == set()
