"""The shipped classifier on radnode's own synthetic studies (an independent check).

The training corpus (``radnode.synth.series_corpus``) never sees the output of
``radnode.synth.mr_study``; the two generators were written separately, so
these studies test that the corpus covers realistic Siemens-like and GE-like
headers rather than that the model memorised them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radnode.routing.classifier import SeriesClassifier, load_default
from radnode.routing.series_index import scan_series
from radnode.synth.mr_study import SERIES_LABELS, generate_mr_study


@pytest.fixture(scope="module")
def model() -> SeriesClassifier:
    return load_default()


@pytest.mark.parametrize("seed", range(8))
def test_shipped_model_labels_every_synth_series(seed: int, tmp_path: Path, model: SeriesClassifier) -> None:
    study = generate_mr_study(tmp_path / "study", seed=seed, rows=32, columns=32, slices=4)
    truth = {s.series_instance_uid: s for s in study.series}
    summaries = scan_series(tmp_path / "study")
    assert {s.series_instance_uid for s in summaries} == set(truth)
    assert sorted(s.label for s in study.series) == sorted(SERIES_LABELS)
    wrong = []
    for summary, pred in zip(summaries, model.predict(summaries)):
        expected = truth[summary.series_instance_uid]
        if pred.label != expected.label or pred.probability < 0.5:
            wrong.append(f"{expected.description!r}: expected {expected.label}, got {pred.label} p={pred.probability:.2f}")
    assert not wrong, f"seed {seed} ({study.vendor}): " + "; ".join(wrong)


def test_seeds_cover_both_dialects(tmp_path: Path) -> None:
    vendors = {generate_mr_study(tmp_path / str(seed), seed=seed, series=["localizer"], rows=16, columns=16, slices=1).vendor for seed in range(8)}
    assert vendors == {"siemens", "ge"}
