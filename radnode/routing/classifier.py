"""Series-type classifier: xgboost on header features.

Why xgboost: the 2020 platform's dcmclass used it on the same kind of features; trees
handle NaN for missing tags natively, need no scaling, train in seconds on
two cores and serialise to a small, portable JSON file that loads without
pickle (no code execution from a model file).

The model file is xgboost's own JSON; next to it a ``.meta.json`` records
the label order, the feature layout version, the radnode version, when it
was trained and how accurate it was, so that a model built for another
feature layout is refused with a clear :class:`ClassifierError` instead of
silently producing garbage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import xgboost as xgb

from radnode import __version__ as radnode_version
from radnode.routing.labels import LABELS
from radnode.routing.features import FEATURE_VERSION, augment_text, feature_matrix, n_features
from radnode.routing.series_index import SeriesSummary

log = structlog.get_logger(__name__)


#: Boosting parameters of the shipped model. Shallow trees and a column
#: subsample keep the model small and stop it leaning on one naming habit.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "multi:softprob",
    "tree_method": "hist",
    "max_depth": 4,
    "eta": 0.2,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "min_child_weight": 1.0,
    "lambda": 1.0,
    "max_bin": 64,
    # One thread: the model is small, and on a busy 2-core machine two
    # threads spent ten times longer synchronising than training (measured).
    "nthread": 1,
    "verbosity": 0,
}
DEFAULT_ROUNDS = 120


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling (Guo et al. 2017): ``softmax(log p / T)``; ``T > 1`` softens over-confident answers.

    The argmax never changes, only how sure the model says it is, so a
    "low confidence, ask for confirmation" threshold becomes meaningful.
    """
    if temperature == 1.0 or proba.size == 0:
        return proba
    logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


class ClassifierError(Exception):
    """The classifier cannot be used: no model, corrupt model, or a layout mismatch."""


@dataclass(frozen=True)
class Prediction:
    """The classifier's answer for one series."""

    label: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class ModelMeta:
    """What is stored next to a model file."""

    labels: list[str]
    feature_version: int
    n_features: int
    radnode_version: str
    trained_at: str
    n_train: int
    accuracy: float | None = None
    accuracy_kind: str = ""
    rounds: int = DEFAULT_ROUNDS
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def meta_path_for(model_path: Path) -> Path:
    """``series_classifier.json`` -> ``series_classifier.meta.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".meta.json")


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).resolve().parent / "models" / "series_classifier.json"


def ordered_labels(labels: Sequence[str]) -> list[str]:
    """Canonical order when all labels are radnode's; else sorted unique."""
    unique = set(labels)
    if unique <= set(LABELS):
        return list(LABELS)
    return sorted(unique)


class SeriesClassifier:
    """xgboost booster plus the label list and metadata it needs."""

    def __init__(self, params: dict[str, Any] | None = None, rounds: int = DEFAULT_ROUNDS, seed: int = 0) -> None:
        self.params = dict(DEFAULT_PARAMS if params is None else params)
        self.rounds = int(rounds)
        self.seed = int(seed)
        self.booster: xgb.Booster | None = None
        self.meta: ModelMeta | None = None

    @property
    def labels(self) -> list[str]:
        if self.meta is None:
            raise ClassifierError("classifier has not been trained or loaded")
        return list(self.meta.labels)

    # --- training -----------------------------------------------------------------
    def fit(self, summaries: Sequence[SeriesSummary], labels: Sequence[str], accuracy: float | None = None, accuracy_kind: str = "") -> SeriesClassifier:
        """Train on series summaries and their labels (any label strings)."""
        if len(summaries) != len(labels):
            raise ValueError(f"{len(summaries)} series but {len(labels)} labels")
        if not summaries:
            raise ValueError("cannot train on an empty set of series")
        return self.fit_matrix(feature_matrix(summaries), labels, accuracy=accuracy, accuracy_kind=accuracy_kind)

    def fit_matrix(
        self,
        x: np.ndarray,
        labels: Sequence[str],
        accuracy: float | None = None,
        accuracy_kind: str = "",
        label_order: Sequence[str] | None = None,
        text_augment: bool = False,
    ) -> SeriesClassifier:
        """Train on a precomputed feature matrix (evaluation reuses one matrix for every fold).

        With *text_augment*, every row gets a half-weight copy whose
        description is dropped or replaced by meaningless tokens
        (:func:`radnode.routing.features.augment_text`), so that an unseen
        description cannot outvote the physics.
        """
        order = list(label_order) if label_order is not None else ordered_labels(labels)
        index = {label: i for i, label in enumerate(order)}
        missing = sorted(set(labels) - set(index))
        if missing:
            raise ValueError(f"labels not in label order: {missing}")
        y = np.array([index[label] for label in labels], dtype=np.int32)
        # Balance classes: 'other' is common and must not drown small classes.
        counts = np.bincount(y, minlength=len(order)).astype(float)
        weights = (len(y) / (len(order) * np.maximum(counts, 1.0)))[y]
        weights = np.sqrt(weights)
        if text_augment:
            x = np.vstack([x, augment_text(x, np.random.default_rng(self.seed))])
            y = np.concatenate([y, y])
            weights = np.concatenate([weights, 0.5 * weights])
        dtrain = xgb.DMatrix(x, label=y, weight=weights, missing=np.nan)
        params = dict(self.params, num_class=len(order), seed=self.seed)
        started = time.monotonic()
        self.booster = xgb.train(params, dtrain, num_boost_round=self.rounds)
        log.info("classifier_trained", n=len(y), classes=len(order), seconds=round(time.monotonic() - started, 2))
        self.meta = ModelMeta(
            labels=order,
            feature_version=FEATURE_VERSION,
            n_features=int(x.shape[1]),
            radnode_version=radnode_version,
            trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            n_train=int(len(y)),
            accuracy=accuracy,
            accuracy_kind=accuracy_kind,
            rounds=self.rounds,
            params=params,
        )
        return self

    # --- prediction ---------------------------------------------------------------
    def predict_proba_matrix(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(n, len(labels))``."""
        if self.booster is None or self.meta is None:
            raise ClassifierError("classifier has not been trained or loaded")
        if x.shape[0] == 0:
            return np.zeros((0, len(self.meta.labels)), dtype=np.float32)
        if x.shape[1] != self.meta.n_features:
            raise ClassifierError(f"model expects {self.meta.n_features} features, got {x.shape[1]}")
        proba = self.booster.predict(xgb.DMatrix(x, missing=np.nan))
        proba = np.asarray(proba, dtype=np.float64).reshape(x.shape[0], len(self.meta.labels))
        return apply_temperature(proba, float(self.meta.extra.get("temperature", 1.0)))

    def predict(self, summaries: Sequence[SeriesSummary]) -> list[Prediction]:
        """One :class:`Prediction` per series, in input order. Bad headers still get an answer."""
        proba = self.predict_proba_matrix(feature_matrix(summaries))
        labels = self.labels
        out: list[Prediction] = []
        for row in proba:
            best = int(np.argmax(row))
            out.append(Prediction(label=labels[best], probability=float(row[best]), probabilities={lab: float(p) for lab, p in zip(labels, row)}))
        return out

    # --- persistence --------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write ``path`` (xgboost JSON) and its ``.meta.json``; returns the model path."""
        if self.booster is None or self.meta is None:
            raise ClassifierError("nothing to save: classifier has not been trained")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # xgboost picks the format from the extension: keep ".json" on the temporary file.
        tmp = path.with_name(f".{path.stem}.tmp.json")
        self.booster.save_model(str(tmp))
        tmp.replace(path)
        meta_path = meta_path_for(path)
        meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
        meta_tmp.write_text(json.dumps(asdict(self.meta), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        meta_tmp.replace(meta_path)
        log.info("classifier_saved", path=str(path), bytes=path.stat().st_size)
        return path

    @classmethod
    def load(cls, path: Path) -> SeriesClassifier:
        """Load a model and its metadata; any problem raises :class:`ClassifierError`."""
        path = Path(path)
        meta_path = meta_path_for(path)
        if not path.is_file():
            raise ClassifierError(f"series classifier model not found: {path}")
        if not meta_path.is_file():
            raise ClassifierError(f"series classifier metadata not found: {meta_path}")
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
            meta = ModelMeta(**raw)
        except Exception as exc:
            raise ClassifierError(f"corrupt classifier metadata {meta_path}: {exc}") from exc
        if meta.feature_version != FEATURE_VERSION or meta.n_features != n_features():
            raise ClassifierError(
                f"model {path} was built for feature layout v{meta.feature_version} ({meta.n_features} features); "
                f"this radnode uses v{FEATURE_VERSION} ({n_features()} features): retrain it"
            )
        if not meta.labels:
            raise ClassifierError(f"classifier metadata {meta_path} lists no labels")
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except Exception as exc:
            raise ClassifierError(f"corrupt series classifier model {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        try:
            n_out = booster.predict(xgb.DMatrix(np.full((1, meta.n_features), np.nan, dtype=np.float32), missing=np.nan)).size
        except Exception as exc:
            raise ClassifierError(f"series classifier model {path} does not match its metadata: {exc}") from exc
        if n_out != len(meta.labels):
            raise ClassifierError(f"model {path} outputs {n_out} classes but its metadata lists {len(meta.labels)}")
        clf = cls(params=meta.params, rounds=meta.rounds)
        clf.booster = booster
        clf.meta = meta
        return clf


def load_default() -> SeriesClassifier:
    """The model shipped with radnode."""
    return SeriesClassifier.load(default_model_path())


# --- evaluation -----------------------------------------------------------------------


@dataclass
class EvalReport:
    """Accuracy on families held out of training, with the confusion matrix."""

    accuracy: float
    n: int
    labels: list[str]
    confusion: list[list[int]]  # rows: true label, columns: predicted label
    folds: list[dict[str, Any]]
    errors: list[dict[str, str]]
    seconds: float
    #: Pooled out-of-fold probabilities (rows follow ``truth``), for calibration.
    proba: Any = None
    truth: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"held-out accuracy: {self.accuracy:.4f} ({self.n} series, {len(self.folds)} folds of held-out families, {self.seconds:.1f} s)"]
        for fold in self.folds:
            lines.append(f"  held out {', '.join(fold['families'])}: {fold['accuracy']:.4f} ({fold['n']} series)")
        lines.append(format_confusion(self.labels, self.confusion))
        if self.errors:
            lines.append("some errors (family | description | true -> predicted):")
            lines.extend(f"  {e['family']} | {e['description']!r} | {e['true']} -> {e['predicted']}" for e in self.errors[:15])
        return "\n".join(lines)


def confusion_matrix(labels: Sequence[str], y_true: Sequence[str], y_pred: Sequence[str]) -> list[list[int]]:
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


def format_confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """Plain-text confusion matrix (rows true, columns predicted)."""
    width = max(6, *(len(label) for label in labels)) + 1
    head = "true\\pred".ljust(width) + "".join(label[:9].rjust(10) for label in labels)
    rows = [head]
    for label, row in zip(labels, matrix):
        rows.append(label.ljust(width) + "".join(str(v).rjust(10) for v in row))
    return "\n".join(rows)
