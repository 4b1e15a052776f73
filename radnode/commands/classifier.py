"""Command-line entry points for the series classifier.

``radnode.cli`` registers them: ``radnode classify DIR`` and ``radnode classifier
train|build-default|corrections export``. They live with the composition roots
because training composes the classifier (routing), the corpus, the training
module and the store of corrections.
"""

from __future__ import annotations

import csv
import json
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
    format_confusion,
    ordered_labels,
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
@click.option("--labels", "labels_csv", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path, resolve_path=True), help="CSV: series_instance_uid,label")
@click.option("--dicom", "dicom_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True), help="Folder with the labelled series.")
@click.option("--with-corrections", "with_corrections", is_flag=True,
              help="Train a site model: the generated corpus plus the corrections radiologists made in the web app (held-out split reported).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path, resolve_path=True), help="Model file to write (JSON).")
@click.option("--folds", default=5, show_default=True, help="k for the k-fold accuracy estimate.")
@click.option("--seed", default=0, show_default=True)
@click.option("--studies-per-family", default=12, show_default=True, help="Generated studies per naming family under the corrections.")
@click.pass_context
def train_command(ctx: click.Context, labels_csv: Path | None, dicom_dir: Path | None, with_corrections: bool, out_path: Path,
                  folds: int, seed: int, studies_per_family: int) -> None:
    """Train a classifier on your own labelled series (--labels/--dicom) or on the site's corrections (--with-corrections)."""
    if with_corrections:
        _train_with_corrections(ctx, out_path, seed, studies_per_family)
        return
    if labels_csv is None or dicom_dir is None:
        raise click.UsageError("give --labels and --dicom, or --with-corrections")
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


def _open_sessions(ctx: click.Context):  # type: ignore[no-untyped-def]
    from radnode.store.db import open_store

    if ctx.obj is not None and hasattr(ctx.obj, "settings"):
        settings = ctx.obj.settings()
    else:  # the group used on its own (tests): settings from the environment
        from radnode.settings import load

        settings = load(None)
    _, sessions = open_store(settings)
    return settings, sessions


def _train_with_corrections(ctx: click.Context, out_path: Path, seed: int, studies_per_family: int) -> None:
    from radnode.routing.classifier import load_default
    from radnode.routing.corrections import MIN_SITE_ACCURACY, all_corrections, train_site_model, usable
    from radnode.routing import corpus as series_corpus

    _, sessions = _open_sessions(ctx)
    corrections = all_corrections(sessions)
    rows = usable(corrections)
    if not rows:
        raise click.ClickException("no corrections recorded yet (correct a series on a job page first)")
    items = series_corpus.generate_corpus(seed=seed, studies_per_family=studies_per_family)
    base_x = feature_matrix([it.summary for it in items])
    try:
        clf, report = train_site_model(rows, base_x, [it.label for it in items], seed=seed, reference=load_default())
    except ClassifierError as exc:
        raise click.ClickException(str(exc)) from exc
    clf.save(out_path)
    click.echo(f"site model trained on {len(items)} generated series and {report['n_train']} corrected series; written to {out_path}")
    if report["n_held_out"]:
        click.echo(f"held-out corrections: {report['n_held_out']}; site model {report['site_accuracy']:.3f}, shipped model {report.get('reference_accuracy', float('nan')):.3f}")
        ok = report["site_accuracy"] >= max(MIN_SITE_ACCURACY, report.get("reference_accuracy", 0.0))
        click.echo("the node may use it: set routing.classifier_model to this file" if ok else "not good enough on the held-out corrections: the node will refuse it")
    else:
        click.echo("fewer than 4 corrected series: nothing held out, so the node will refuse this model until more corrections exist")


@classifier_group.group("corrections")
def corrections_group() -> None:
    """Corrections of series labels made by radiologists."""


@corrections_group.command("export")
@click.option("--json", "as_json", is_flag=True, help="JSON with header attributes and feature vectors (default).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one row per correction.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of stdout.")
@click.pass_context
def export_command(ctx: click.Context, as_json: bool, as_csv: bool, out_path: Path | None) -> None:
    """Every correction: who, when, which series, what the classifier said, what it is."""
    from radnode.routing.corrections import all_corrections, export_csv, export_json

    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    _, sessions = _open_sessions(ctx)
    corrections = all_corrections(sessions)
    text = export_csv(corrections) if as_csv else export_json(corrections)
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
        click.echo(f"{len(corrections)} corrections written to {out_path}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))


@classifier_group.command("build-default")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path, resolve_path=True), default=None, help="Default: the shipped model path.")
@click.option("--seed", default=0, show_default=True)
@click.option("--studies-per-family", default=30, show_default=True)
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the figures as JSON here.")
def build_default_command(out_path: Path | None, seed: int, studies_per_family: int, report_path: Path | None) -> None:
    """Generate the corpus; evaluate leave-families-out and leave-one-vendor-out; calibrate; train; score the external set."""
    from radnode.routing.classifier import apply_temperature
    from radnode.routing import corpus as series_corpus
    from radnode.training.series import (
        HIGH_CONFIDENCE,
        confidence_report,
        evaluate_external,
        evaluate_holdout,
        fit_temperature,
        per_class_recall,
        train_default,
    )

    started = time.monotonic()
    items = series_corpus.generate_corpus(seed=seed, studies_per_family=studies_per_family)
    x = feature_matrix([it.summary for it in items])
    figures: dict[str, object] = {"n_series": len(items), "families": len(series_corpus.FAMILIES)}
    reports = {}
    for kind, folds in (("family", series_corpus.HOLDOUT_FOLDS), ("vendor", series_corpus.vendor_folds())):
        report = evaluate_holdout(seed=seed, items=items, x=x, folds=folds)
        reports[kind] = report
        click.echo(f"== leave-{kind}-out ==")
        click.echo(report.format())
        recall = per_class_recall(report)
        click.echo("recall: " + ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))
        figures[kind] = {"accuracy": report.accuracy, "n": report.n, "folds": report.folds, "recall": recall, "confusion": report.confusion}
    pooled = np.vstack([reports["family"].proba, reports["vendor"].proba])
    truth = list(reports["family"].truth) + list(reports["vendor"].truth)
    temperature = fit_temperature(pooled, truth)
    raw = confidence_report(pooled, truth)
    calibrated = confidence_report(apply_temperature(pooled, temperature), truth)
    click.echo(f"calibration: temperature {temperature}; wrong picks with p >= {HIGH_CONFIDENCE}: {raw['wrong_high_confidence']} of {raw['wrong']} before, "
               f"{calibrated['wrong_high_confidence']} of {calibrated['wrong']} after; ECE {raw['ece']} -> {calibrated['ece']}")
    figures["calibration"] = {"temperature": temperature, "raw": raw, "calibrated": calibrated, "threshold": HIGH_CONFIDENCE}
    clf = train_default(seed=seed, studies_per_family=studies_per_family, report=reports["family"], vendor_report=reports["vendor"],
                        temperature=temperature, items=items, x=x)
    external = evaluate_external(clf)
    click.echo(f"external set (package-shipped real headers): {external['correct']}/{external['n']} = {external['accuracy']:.3f}")
    for row in external["rows"]:
        mark = "ok " if row["true"] == row["predicted"] else "ERR"
        click.echo(f"  {mark} {row['source']}:{row['name']:<45} {row['true']:<10} -> {row['predicted']:<10} {row['probability']:.2f}")
    figures["external"] = external
    if clf.meta is not None:
        clf.meta.extra["external"] = {k: external[k] for k in ("n", "correct", "accuracy")}
        clf.meta.extra["calibration"] = figures["calibration"]
    path = clf.save(out_path or default_model_path())
    figures["seconds"] = round(time.monotonic() - started, 1)
    if report_path is not None:
        report_path.write_text(json.dumps(figures, indent=2, default=float) + "\n", encoding="utf-8")
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
