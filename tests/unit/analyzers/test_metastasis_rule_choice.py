"""Choosing the metastasis candidate rule on validation studies (the search the manifest's numbers come from).

Why: the demo model's ``lesions:`` rule is not hand-set; ``choose_rule``
picks it on studies of the training heads. Through the DICOM pipeline the
brain mask keeps a rim of dura where false candidates appear, which only the
depth test removes — so the search must be able to choose that test when it
is offered, must keep every lesion it can, and must not choose it when the
studies give no reason to.
"""

from __future__ import annotations

import numpy as np

from radnode.analyzers.metastasis.data import Prepared
from radnode.analyzers.metastasis.train import choose_rule

N = 48


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    z, y, x = np.ogrid[:N, :N, :N]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _case(seed: int, rim_false_positive: bool) -> tuple[Prepared, np.ndarray]:
    """A brain ball with one 7 mm lesion deep inside, P(lesion) high on it, and maybe a blob at the mask's edge."""
    brain = _ball((24, 24, 24), 20)
    labels = _ball((24, 24, 20), 3.5).astype(np.uint8)
    prob = np.where(labels > 0, 0.95, 0.02).astype(np.float32)
    if rim_false_positive:
        prob[_ball((24, 24, 43), 3.0) & brain] = 0.95  # ~1-2 mm deep: dura kept by the brain mask
    p = Prepared(np.zeros((1, 1, 1), np.float32), brain, labels, np.zeros((1, 1, 1), bool), {1: 7.0}, seed, "test",
                 (slice(None),) * 3)
    return p, prob


def test_the_depth_test_is_chosen_when_offered_and_rim_candidates_are_false() -> None:
    cases = [_case(1, True), _case(2, True), _case(3, False)]
    rule, summary, table = choose_rule(cases)
    assert rule.min_depth_mm is None
    assert summary["false_positives_per_study"] > 0.5  # nothing in the template-level grid removes the rim blob

    rule, summary, table = choose_rule(cases, depth_grid=(None, 3.0, 5.0))
    assert rule.min_depth_mm == 5.0
    assert summary["lesions"]["ge5"] == {"found": 3, "total": 3}
    assert summary["false_positives_per_study"] == 0.0
    assert {t["rule"]["min_depth_mm"] for t in table} == {None, 3.0, 5.0}


def test_no_rule_that_loses_a_lesion_wins_over_one_that_keeps_it() -> None:
    """A faint lesion (peak 0.45) is kept by a low seed threshold even though higher ones are 'cleaner'."""
    cases = [_case(1, False), _case(2, False)]
    p, prob = cases[1]
    prob[p.labels > 0] = 0.45
    rule, summary, _ = choose_rule(cases, depth_grid=(None, 5.0))
    assert rule.seed_threshold <= 0.45
    assert summary["lesions"]["ge5"] == {"found": 2, "total": 2}
    assert summary["false_positives_per_study"] == 0.0
