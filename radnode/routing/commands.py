"""Command-line entry points for the series classifier.

The integrator registers these on the main ``radnode`` click group::

    from radnode.routing.commands import classifier_group, classify_command
    cli.add_command(classifier_group)   # radnode classifier train|build-default
    cli.add_command(classify_command)   # radnode classify DIR
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import structlog
from tqdm import tqdm

from radnode.cli_output import echo_rows
from radnode.routing.classifier import (
    ClassifierError,
    SeriesClassifier,
    confusion_matrix,
    default_model_path,
    evaluate_holdout,
    format_confusion,
    ordered_labels,
    train_default,
)
from radnode.routing.features import feature_matrix
from radnode.routing.series_index import scan_series

log = structlog.get_logger(__name__)


def read_label_csv(path: Path) -> dict[str, str]:
    """``series_instance_uid,label`` rows; a header row is optional; blank and ``#`` lines are skipped."""
    labels: dict[str, str] = {}
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        for row_number, row in enumerate(csv.reader(handle), start=1):
            if not row or not row[0].strip() or row[0].strip().startswith("#"):
                continue
            if len(row) < 2:
                raise click.ClickException(f"{path}:{row_number}: expected 'series_instance_uid,label'")
            uid, label = row[0].strip(), row[1].strip()
            if row_number == 1 and uid.lower() in ("series_instance_uid", "seriesinstanceuid", "uid"):
                continue
            if not label:
                raise click.ClickException(f"{path}:{row_number}: empty label")
            labels[uid] = label
    return labels


@click.group("classifier")
def classifier_group() -> None:
    """Train and build the series-type classifier."""


@classifier_group.command("train")
@click.option("--labels", "labels_csv", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path, resolve_path=True), help="CSV: series_instance_uid,label")
@click.option("--dicom", "dicom_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True), help="Folder with the labelled series.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path, resolve_path=True), help="Model file to write (JSON).")
@click.option("--folds", default=5, show_default=True, help="k for the k-fold accuracy estimate.")
@click.option("--seed", default=0, show_default=True)
def train_command(labels_csv: Path, dicom_dir: Path, out_path: Path, folds: int, seed: int) -> None:
    """Train a classifier on your own labelled series; prints k-fold accuracy and a confusion matrix."""
    wanted = read_label_csv(labels_csv)
    summaries = [s for s in scan_series(dicom_dir) if s.series_instance_uid in wanted]
    found = {s.series_instance_uid for s in summaries}
    absent = [uid for uid in wanted if uid not in found]
    if absent:
        click.echo(f"warning: {len(absent)} labelled series not found under {dicom_dir}", err=True)
    if len(summaries) < 2:
        raise click.ClickException("need at least two labelled series found in the DICOM folder")
    labels = [wanted[s.series_instance_uid] for s in summaries]
    x = feature_matrix(summaries)
    order = ordered_labels(labels)
    k = max(2, min(folds, len(summaries)))
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(len(summaries)) % k)
    y_true: list[str] = []
    y_pred: list[str] = []
    for fold in tqdm(range(k), desc="k-fold", unit="fold", file=sys.stderr):
        test = fold_of == fold
        if test.all() or not test.any():
            continue
        clf = SeriesClassifier(seed=seed).fit_matrix(x[~test], [labels[i] for i in np.flatnonzero(~test)], label_order=order)
        proba = clf.predict_proba_matrix(x[test])
        y_pred.extend(order[int(i)] for i in proba.argmax(axis=1))
        y_true.extend(labels[i] for i in np.flatnonzero(test))
    accuracy = sum(t == p for t, p in zip(y_true, y_pred)) / max(len(y_true), 1)
    click.echo(f"{k}-fold accuracy: {accuracy:.4f} ({len(y_true)} series)")
    click.echo(format_confusion(order, confusion_matrix(order, y_true, y_pred)))
    final = SeriesClassifier(seed=seed).fit_matrix(x, labels, accuracy=accuracy, accuracy_kind=f"{k}-fold cross-validation", label_order=order)
    final.save(out_path)
    click.echo(f"model written to {out_path}")


@classifier_group.command("build-default")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path, resolve_path=True), default=None, help="Default: the shipped model path.")
@click.option("--seed", default=0, show_default=True)
@click.option("--studies-per-family", default=40, show_default=True)
def build_default_command(out_path: Path | None, seed: int, studies_per_family: int) -> None:
    """Generate the synthetic corpus, evaluate on held-out families, train and write the shipped model."""
    started = time.monotonic()
    report = evaluate_holdout(seed=seed, studies_per_family=studies_per_family)
    click.echo(report.format())
    clf = train_default(seed=seed, studies_per_family=studies_per_family, report=report)
    path = clf.save(out_path or default_model_path())
    click.echo(f"model written to {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.monotonic() - started:.1f} s")


@click.command("classify")
@click.argument("directory", type=click.Path(exists=True, path_type=Path, resolve_path=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path, resolve_path=True), default=None, help="Default: the shipped model.")
def classify_command(directory: Path, as_json: bool, model_path: Path | None) -> None:
    """Classify every series found under DIRECTORY."""
    try:
        clf = SeriesClassifier.load(model_path or default_model_path())
    except ClassifierError as exc:
        raise click.ClickException(str(exc)) from exc
    summaries = scan_series(directory)
    predictions = clf.predict(summaries)
    rows = [
        {
            "series_instance_uid": s.series_instance_uid,
            "series_description": s.series_description,
            "label": p.label,
            "probability": round(p.probability, 4),
        }
        for s, p in zip(summaries, predictions)
    ]
    by_uid = {s.series_instance_uid: s for s in summaries}

    def line(row: dict[str, Any]) -> str:
        s = by_uid[row["series_instance_uid"]]
        number = "" if s.series_number is None else str(s.series_number)
        return f"{number:>5}  {row['label']:<10} {row['probability']:>5.2f}  {s.instance_count:>5}  {row['series_description'] or '(no description)'}  {s.series_instance_uid}"

    echo_rows(rows, as_json=as_json, empty="no series found", render=line, header=f"{'#':>5}  {'label':<10} {'prob':>5}  {'n':>5}  description / series UID", indent=None)
