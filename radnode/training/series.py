"""Train, evaluate and calibrate the series classifier on the generated corpus.

Why a module of its own: the live node only loads a model
(``radnode.routing.classifier``); generating a corpus, holding out whole
naming families or whole vendors, fitting the calibration temperature and
scoring the external set of real headers belong to building it.

Honest figures: every accuracy here is on series of families (or vendors)
that no tree saw in training. The calibration temperature is fitted on those
out-of-fold predictions, never on training rows.
"""

from __future__ import annotations

import csv
import importlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import structlog

from radnode.routing.classifier import DEFAULT_ROUNDS, EvalReport, SeriesClassifier, apply_temperature, confusion_matrix
from radnode.routing.features import feature_matrix
from radnode.routing.labels import LABELS
from radnode.routing.series_index import SeriesSummary
from radnode.routing import corpus as corpus_mod

log = structlog.get_logger(__name__)

#: "High confidence" for the calibration report: the routing default threshold.
HIGH_CONFIDENCE = 0.9


def evaluate_holdout(
    seed: int = 0,
    studies_per_family: int = 30,
    folds: Sequence[Sequence[str]] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    items: Sequence[corpus_mod.CorpusItem] | None = None,
    text_augment: bool = True,
    x: np.ndarray | None = None,
) -> EvalReport:
    """Train without whole naming families, test on them, for each fold; pool the results.

    The corpus is generated from ``seed`` (or passed as ``items``). In each
    fold every series of the held-out families is excluded from training
    and only those series are scored, so the number measures how the model
    does on a site whose naming it has never seen. ``folds`` may be
    :func:`radnode.routing.corpus.vendor_folds` (leave one vendor out).
    The report's ``extra`` keeps the pooled out-of-fold probabilities for
    calibration.
    """
    started = time.monotonic()
    if items is None:
        items = corpus_mod.generate_corpus(seed=seed, studies_per_family=studies_per_family)
    folds = corpus_mod.HOLDOUT_FOLDS if folds is None else folds
    if x is None:
        x = feature_matrix([it.summary for it in items])
    labels = list(LABELS)
    families = np.array([it.family for it in items])
    truth = [it.label for it in items]
    all_true: list[str] = []
    all_pred: list[str] = []
    all_proba: list[np.ndarray] = []
    fold_reports: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for held in folds:
        test = np.isin(families, list(held))
        if not test.any():
            continue
        clf = SeriesClassifier(rounds=rounds, seed=seed).fit_matrix(
            x[~test], [truth[i] for i in np.flatnonzero(~test)], label_order=labels, text_augment=text_augment
        )
        proba = clf.predict_proba_matrix(x[test])
        pred = [labels[int(k)] for k in proba.argmax(axis=1)]
        true = [truth[i] for i in np.flatnonzero(test)]
        correct = sum(t == p for t, p in zip(true, pred))
        fold_reports.append({"families": list(held), "n": len(true), "accuracy": correct / len(true)})
        for i, t, p, row in zip((int(k) for k in np.flatnonzero(test)), true, pred, proba):
            if t != p:
                errors.append({"family": items[i].family, "description": items[i].summary.series_description, "true": t, "predicted": p,
                               "archetype": items[i].archetype, "probability": f"{row.max():.3f}"})
        all_true.extend(true)
        all_pred.extend(pred)
        all_proba.append(proba)
    n = len(all_true)
    accuracy = sum(t == p for t, p in zip(all_true, all_pred)) / n if n else math.nan
    report = EvalReport(
        accuracy=accuracy,
        n=n,
        labels=labels,
        confusion=confusion_matrix(labels, all_true, all_pred),
        folds=fold_reports,
        errors=errors,
        seconds=time.monotonic() - started,
    )
    report.proba = np.vstack(all_proba) if all_proba else np.zeros((0, len(labels)))
    report.truth = all_true
    return report


def per_class_recall(report: EvalReport) -> dict[str, float]:
    """Recall of every label from a report's confusion matrix (NaN for a label with no series)."""
    out = {}
    for i, label in enumerate(report.labels):
        total = sum(report.confusion[i])
        out[label] = report.confusion[i][i] / total if total else math.nan
    return out


def fit_temperature(proba: np.ndarray, truth: Sequence[str], labels: Sequence[str] = LABELS) -> float:
    """The temperature that minimises the negative log-likelihood of out-of-fold predictions (grid search)."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[t] for t in truth])
    if len(y) == 0:
        return 1.0
    best, best_nll = 1.0, math.inf
    for t in np.round(np.arange(0.5, 5.01, 0.05), 2):
        p = apply_temperature(proba, float(t))
        nll = -float(np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def confidence_report(proba: np.ndarray, truth: Sequence[str], labels: Sequence[str] = LABELS, threshold: float = HIGH_CONFIDENCE) -> dict[str, float]:
    """How often a wrong pick comes with probability ≥ *threshold*, and the expected calibration error."""
    if len(truth) == 0:
        return {"wrong": 0, "wrong_high_confidence": 0, "share_of_wrong_high": math.nan, "share_of_all_high": math.nan, "ece": math.nan}
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[t] for t in truth])
    wrong = pred != y
    high = conf >= threshold
    bins = np.linspace(0, 1, 11)
    ece = 0.0
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(float((~wrong[sel]).mean()) - float(conf[sel].mean()))
    return {
        "wrong": int(wrong.sum()),
        "wrong_high_confidence": int((wrong & high).sum()),
        "share_of_wrong_high": float((wrong & high).sum() / max(int(wrong.sum()), 1)),
        "share_of_all_high": float((wrong & high).sum() / len(y)),
        "ece": round(ece, 4),
    }


def train_default(
    seed: int = 0,
    studies_per_family: int = 30,
    rounds: int = DEFAULT_ROUNDS,
    report: EvalReport | None = None,
    vendor_report: EvalReport | None = None,
    temperature: float = 1.0,
    items: Sequence[corpus_mod.CorpusItem] | None = None,
    x: np.ndarray | None = None,
    external: dict[str, Any] | None = None,
) -> SeriesClassifier:
    """Train the shipped model on the whole generated corpus (all families), with text augmentation."""
    if items is None:
        items = corpus_mod.generate_corpus(seed=seed, studies_per_family=studies_per_family)
    if x is None:
        x = feature_matrix([it.summary for it in items])
    clf = SeriesClassifier(rounds=rounds, seed=seed)
    clf.fit_matrix(
        x,
        [it.label for it in items],
        accuracy=None if report is None else report.accuracy,
        accuracy_kind="" if report is None else "held-out naming families (leave-families-out folds)",
        label_order=LABELS,
        text_augment=True,
    )
    if clf.meta is not None:
        clf.meta.extra = {"corpus_seed": seed, "studies_per_family": studies_per_family, "temperature": temperature, "text_augment": True}
        if report is not None:
            clf.meta.extra["holdout_confusion"] = report.confusion
            clf.meta.extra["holdout_n"] = report.n
        if vendor_report is not None:
            clf.meta.extra["vendor_holdout_accuracy"] = vendor_report.accuracy
            clf.meta.extra["vendor_holdout_confusion"] = vendor_report.confusion
        if external is not None:
            clf.meta.extra["external"] = external
    return clf


# --- the external set: real headers that ship inside installed packages ------------------

EXTERNAL_CSV = Path(__file__).resolve().parent / "external_headers.csv"


@dataclass(frozen=True)
class ExternalItem:
    source: str
    name: str
    label: str
    why: str
    summary: SeriesSummary


def _resolve(source: str, name: str) -> Path:
    """Path of a package-shipped file: pydicom's (and pydicom-data's) test files, or a file inside a package."""
    if source == "pydicom":
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name)
        if found is None:
            raise FileNotFoundError(f"pydicom test file {name!r} not found (install the 'pydicom-data' package)")
        return Path(str(found))
    module = importlib.import_module(source)
    path = Path(str(module.__file__)).resolve().parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{source}: {name} not found")
    return path


def external_set(csv_path: Path = EXTERNAL_CSV) -> list[ExternalItem]:
    """The labelled external headers (raises FileNotFoundError when a package that ships one is missing)."""
    rows = [line for line in csv_path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    out = []
    for row in csv.DictReader(rows):
        path = _resolve(row["source"], row["name"])
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = int(header.get("NumberOfFrames") or 1)
        out.append(ExternalItem(row["source"], row["name"], row["label"], row["why"], SeriesSummary.from_header(header, instance_count=frames, paths=(path,))))
    return out


def evaluate_external(clf: SeriesClassifier, items: Sequence[ExternalItem] | None = None) -> dict[str, Any]:
    """Accuracy of *clf* on the external set, with every series' answer (for BENCHMARKS.md)."""
    items = external_set() if items is None else items
    predictions = clf.predict([it.summary for it in items])
    rows = [
        {"source": it.source, "name": it.name, "true": it.label, "predicted": p.label, "probability": round(p.probability, 3)}
        for it, p in zip(items, predictions)
    ]
    correct = sum(r["true"] == r["predicted"] for r in rows)
    return {"n": len(rows), "correct": correct, "accuracy": correct / len(rows) if rows else math.nan, "rows": rows}
