"""The shipped model's recorded figures, and the external set of real headers.

``radnode classifier build-default`` records the leave-one-vendor-out
confusion matrix, the calibration temperature and the external-set accuracy
in the model's metadata; these tests hold the shipped model to the issue's
acceptance figures and re-score the external set to check the record.
"""

from __future__ import annotations

import numpy as np

from radnode.routing.classifier import apply_temperature, load_default
from radnode.routing.labels import LABELS
from radnode.training.series import confidence_report, evaluate_external, external_set, fit_temperature


def _recalls(confusion: list[list[int]]) -> dict[str, float]:
    return {label: row[i] / sum(row) for i, (label, row) in enumerate(zip(LABELS, confusion)) if sum(row)}


def test_shipped_model_meets_leave_one_vendor_out_targets() -> None:
    meta = load_default().meta
    assert meta is not None
    extra = meta.extra
    assert extra["vendor_holdout_accuracy"] >= 0.98
    recalls = _recalls(extra["vendor_holdout_confusion"])
    assert set(recalls) == set(LABELS)
    assert min(recalls.values()) >= 0.95, recalls
    assert meta.accuracy is not None and meta.accuracy >= 0.98  # leave families out
    assert min(_recalls(extra["holdout_confusion"]).values()) >= 0.95
    assert extra["text_augment"] is True and 0.3 <= extra["temperature"] <= 5.0


def test_external_set_is_scored_as_recorded() -> None:
    items = external_set()
    assert len(items) >= 20
    assert {i.source for i in items} >= {"pydicom", "nibabel"}
    assert {"t1", "t2", "localizer", "ct_brain", "other"} <= {i.label for i in items}
    clf = load_default()
    report = evaluate_external(clf, items)
    assert clf.meta is not None
    recorded = clf.meta.extra["external"]
    assert (report["n"], report["correct"]) == (recorded["n"], recorded["correct"])


def test_temperature_fit_and_confidence_report() -> None:
    rng = np.random.default_rng(0)
    truth = [LABELS[i % len(LABELS)] for i in range(400)]
    logits = rng.normal(size=(400, len(LABELS)))
    for i, t in enumerate(truth):
        logits[i, LABELS.index(t)] += 1.0  # right most of the time, but over-confident below
    proba = np.exp(4 * logits) / np.exp(4 * logits).sum(axis=1, keepdims=True)
    temperature = fit_temperature(proba, truth)
    assert temperature > 1.5  # softens an over-confident model
    before = confidence_report(proba, truth)
    after = confidence_report(apply_temperature(proba, temperature), truth)
    assert after["wrong"] == before["wrong"]  # calibration never changes the pick
    assert after["wrong_high_confidence"] < before["wrong_high_confidence"]
    assert after["ece"] < before["ece"]
