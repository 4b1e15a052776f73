"""The metastasis training loss weights small lesions up, lesion by lesion.

Why: models 0.1.0 and 0.2.0 gave every 3–5 mm lesion P(lesion) < 0.01 end to
end — in the plain class-weighted loss a 15-voxel lesion is worth nothing
beside a 5,000-voxel one, and the look-alike vessels (small, bright) taught
the model that small bright blobs are not lesions. The weights must follow
each lesion through the patch's flips and rotations, or the boost lands on
the wrong voxels.
"""

from __future__ import annotations

import numpy as np

from radnode.analyzers.metastasis.data import Prepared
from radnode.analyzers.metastasis.train import (
    LESION_WEIGHT,
    MAX_SMALL_BOOST,
    SMALL_LESION_VOXELS,
    _index,
    lesion_weights,
    sample_patch,
)

N = 72


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    z, y, x = np.ogrid[:N, :N, :N]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def test_weights_scale_inversely_with_lesion_size_within_the_cap() -> None:
    w = lesion_weights({1: 10_000, 2: SMALL_LESION_VOXELS // 4, 3: 1})
    assert w[0] == 1.0
    assert w[1] == LESION_WEIGHT  # large lesions keep the plain class weight
    assert w[2] == LESION_WEIGHT * 4
    assert w[3] == LESION_WEIGHT * MAX_SMALL_BOOST


def test_patch_weights_follow_each_lesion_through_the_augmentations() -> None:
    brain = _ball((36, 36, 36), 34)
    labels = np.zeros((N, N, N), np.uint8)
    labels[_ball((36, 36, 30), 9)] = 1  # ~3,000 voxels
    labels[_ball((36, 36, 48), 1.5)] = 2  # 3-mm lesion, ~19 voxels
    t1c = np.where(brain, 840.0, 0.0).astype(np.float32)
    t1c[labels > 0] = 1450.0
    p = Prepared(t1c, brain, labels, np.zeros_like(brain), {1: 18.0, 2: 3.0}, 0, "test", (slice(None),) * 3)
    case = _index(p)
    small = case.weights[2]
    assert small > 5 * case.weights[1]
    rng = np.random.default_rng(3)
    seen_small = 0
    for _ in range(40):
        x, y, w = sample_patch(case, rng, size=48)
        assert x.shape == (1, 48, 48, 48) and y.shape == w.shape == (48, 48, 48)
        assert np.all(w[y == 0] == 1.0)
        assert set(np.unique(w[y == 1])) <= {case.weights[1], small}
        if (w == small).any():
            seen_small += 1
            # The boosted voxels are a compact blob of the small lesion's size, not spread over the big one.
            assert (w == small).sum() <= 2 * int((labels == 2).sum())
    assert seen_small > 0
