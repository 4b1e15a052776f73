"""Does a per-application series model beat the shared one on held-out naming families?

The seed platform fitted one tree model per application (glioma: flair, t1,
t1c, t2, other). radnode ships one shared model with ten classes. This script
compares them the way routing uses them: for every series of the held-out
families, is its *glioma role* right (t1/t1c/t2/flair, or "none of them")?

    python bench/classifier_per_app.py [--studies-per-family 12]

Both models are trained on the same folds (leave families out) and the same
features, with the same text augmentation; only the label set differs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from radnode.routing.classifier import SeriesClassifier
from radnode.routing.features import feature_matrix
from radnode.routing.labels import LABELS
from radnode.routing import corpus as series_corpus

ROLES = ("t1", "t1c", "t2", "flair")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies-per-family", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    items = series_corpus.generate_corpus(seed=args.seed, studies_per_family=args.studies_per_family)
    x = feature_matrix([it.summary for it in items])
    truth = np.array([it.label if it.label in ROLES else "none" for it in items])
    families = np.array([it.family for it in items])
    app_labels = list(ROLES) + ["none"]
    shared_ok = app_ok = n = 0
    for held in series_corpus.HOLDOUT_FOLDS:
        test = np.isin(families, list(held))
        train_idx = np.flatnonzero(~test)
        shared = SeriesClassifier(seed=args.seed).fit_matrix(x[~test], [items[i].label for i in train_idx], label_order=LABELS, text_augment=True)
        app = SeriesClassifier(seed=args.seed).fit_matrix(x[~test], [str(truth[i]) for i in train_idx], label_order=app_labels, text_augment=True)
        sp = [LABELS[k] for k in shared.predict_proba_matrix(x[test]).argmax(axis=1)]
        sp = np.array([p if p in ROLES else "none" for p in sp])
        ap = np.array([app_labels[k] for k in app.predict_proba_matrix(x[test]).argmax(axis=1)])
        t = truth[test]
        shared_ok += int((sp == t).sum())
        app_ok += int((ap == t).sum())
        n += int(test.sum())
        print(f"held out {', '.join(held)}: shared {np.mean(sp == t):.4f}, per-application {np.mean(ap == t):.4f} ({int(test.sum())} series)")
    print(f"glioma roles on held-out families: shared model {shared_ok / n:.4f}, per-application model {app_ok / n:.4f} "
          f"({n} series, {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
