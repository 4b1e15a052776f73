"""The synthetic corpus: reproducible, varied, labelled with families."""

from __future__ import annotations

from collections import Counter

import pytest

from radnode.synth.series_corpus import FAMILIES, HOLDOUT_FOLDS, LABELS, generate_corpus


def _fingerprint(items: list) -> list[tuple[str, str, str, str]]:
    return [(i.family, i.label, i.summary.series_description, i.summary.series_instance_uid) for i in items]


def test_same_seed_same_corpus_other_seed_differs() -> None:
    a = generate_corpus(seed=7, studies_per_family=3)
    b = generate_corpus(seed=7, studies_per_family=3)
    c = generate_corpus(seed=8, studies_per_family=3)
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(a) != _fingerprint(c)


def test_family_subset_matches_full_corpus() -> None:
    full = generate_corpus(seed=3, studies_per_family=3)
    subset = generate_corpus(seed=3, studies_per_family=3, families=["ge_classic", "ct_canon"])
    assert _fingerprint(subset) == _fingerprint([i for i in full if i.family in ("ge_classic", "ct_canon")])
    with pytest.raises(ValueError):
        generate_corpus(seed=3, studies_per_family=1, families=["no_such_family"])


def test_every_label_and_family_is_present_with_variety() -> None:
    items = generate_corpus(seed=0, studies_per_family=12)
    labels = Counter(i.label for i in items)
    assert set(labels) == set(LABELS)
    assert min(labels.values()) >= 20
    assert {i.family for i in items} == set(FAMILIES)
    # many different spellings per label, including empty descriptions
    assert len({i.summary.series_description for i in items if i.label == "t1c"}) >= 30
    assert any(i.summary.series_description == "" for i in items)
    # post-contrast T1 sometimes only has the contrast agent tag to say so
    assert any(i.label == "t1c" and "ContrastBolusAgent" in i.summary.header for i in items)
    # non-T1 series after contrast carry the agent tag but keep their own label
    assert any(i.label == "flair" and "ContrastBolusAgent" in i.summary.header for i in items)
    for item in items:
        assert item.summary.series_instance_uid.startswith("2.25.")
        assert item.summary.instance_count >= 1
        assert "PixelData" not in item.summary.header


def test_holdout_folds_cover_families_once() -> None:
    held = [f for fold in HOLDOUT_FOLDS for f in fold]
    assert sorted(held) == sorted(FAMILIES)
