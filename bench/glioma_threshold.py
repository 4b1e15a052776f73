"""Choose the glioma model's foreground threshold (manifest ``foreground_threshold``).

One inference per generated study (``save_probabilities``), then every
threshold in ``--thresholds`` is applied to the saved foreground probability
and followed by the same island rule as the analyzer; per threshold it prints
the mean whole-tumour, tumour-core and enhancing Dice, the lesions reported,
and the centroid and largest-axial-diameter errors against the generated truth.

    python bench/glioma_threshold.py --tune colin27:900200:3 --test mni152:900100:3 \
        --thresholds none,0.5,0.55,0.6,0.65,0.7,0.75

Choose the threshold on the ``--tune`` studies only (the shipped model's
training head, other seeds), then read the ``--test`` rows (a head the model
never saw) as the held-out figure: the test studies must not choose it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cases(spec: str) -> list[tuple[str, int]]:
    """``ANATOMY:SEED:N[,ANATOMY:SEED:N…]`` → (anatomy, seed) pairs."""
    cases = []
    for part in spec.split(","):
        anatomy, seed, n = part.split(":")
        cases += [(anatomy, s) for s in range(int(seed), int(seed) + int(n))]
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tune", required=True, help="ANATOMY:SEED:N[,…], the studies that choose the threshold")
    ap.add_argument("--test", required=True, help="ANATOMY:SEED:N[,…], held-out studies (reported, never used to choose)")
    ap.add_argument("--thresholds", default="none,0.5,0.55,0.6,0.65,0.7,0.75")
    ap.add_argument("--model", help="a model by manifest name (default: the newest glioma model), e.g. an older one "
                    "in a folder named by RADNODE_ANALYZERS__MODEL_DIRS")
    args = ap.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from bench.glioma import compare, dice, readings
    from radnode.analyzers.base import AnalyzerInputs, SeriesInput
    from radnode.analyzers.glioma.analyzer import GliomaAnalyzer, GliomaOptions
    from radnode.analyzers.glioma.lesions import IslandRule, clean_label_map
    from radnode.analyzers.runtime import resample_like
    from radnode.logconfig import configure_logging
    from radnode.routing.classifier import load_default
    from radnode.analyzers.registry import GLIOMA
    from radnode.routing.selection import select_series
    from radnode.routing.series_index import scan_series
    from radnode.synth.glioma import generate_glioma_study

    configure_logging("warning", "console")
    thresholds = [None if t == "none" else float(t) for t in args.thresholds.split(",")]
    from radnode.settings import Settings

    analyzer = GliomaAnalyzer.from_settings(Settings())  # analyzers.model_dirs, e.g. RADNODE_ANALYZERS__MODEL_DIRS
    classifier = load_default()
    rows: dict[str, dict[str, list[dict[str, float]]]] = {"tune": {}, "test": {}}
    for split, spec in (("tune", args.tune), ("test", args.test)):
        for anatomy, seed in _cases(spec):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                study = generate_glioma_study(root / "study", seed=seed, anatomy=anatomy)
                summaries = scan_series(root / "study" / "dicom")
                selection = select_series(GLIOMA, summaries, classifier.predict(summaries))
                by_uid = {s.series_instance_uid: s for s in summaries}
                inputs = AnalyzerInputs(
                    study_instance_uid=summaries[0].study_instance_uid,
                    series={r: SeriesInput(r, c.series_instance_uid, tuple(sorted(by_uid[c.series_instance_uid].paths)))
                            for r, c in selection.chosen.items()},
                    options=GliomaOptions(save_probabilities=True, model=args.model),
                    job_id=f"threshold-{seed}",
                )
                work = root / "work"
                work.mkdir()
                result = analyzer.run(inputs, work, lambda stage: None)
                reference = sitk.ReadImage(result.extra["labels_raw_nifti"])
                fg_prob = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "foreground_probability.nii.gz")))
                fg_label = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "labels_foreground_argmax.nii.gz")))
                raw_argmax = sitk.GetArrayFromImage(reference)
                brain_mask = sitk.Cast(sitk.ReadImage(result.extra["brain_mask_nifti"]) > 0, sitk.sitkUInt8)
                brain = sitk.GetArrayFromImage(resample_like(brain_mask, reference, sitk.sitkNearestNeighbor, default_value=0)) > 0
                truth_img = sitk.ReadImage(str(study.labels_path))
                brain_truth = sitk.ReadImage(str(study.labels_path.parent / "brain_t1c.nii.gz"))
                brain_found = sitk.Resample(brain_mask, brain_truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
                brain_dice = dice(sitk.GetArrayFromImage(brain_found) > 0, sitk.GetArrayFromImage(brain_truth) > 0)
                truth = sitk.GetArrayFromImage(truth_img)
                t_geo = readings(truth_img)
                sx, sy, sz = reference.GetSpacing()
                for t in thresholds:
                    labels = raw_argmax if t is None else np.where(fg_prob >= t, fg_label, 0).astype(np.uint8)
                    clean, lesion_map, _ = clean_label_map(labels, (sz, sy, sx), brain, IslandRule())
                    image = sitk.GetImageFromArray(clean)
                    image.CopyInformation(reference)
                    c = compare(readings(image), t_geo)
                    rows[split].setdefault(str(t), []).append({
                        "seed": seed,
                        "anatomy": anatomy,
                        "wt": dice(clean > 0, truth > 0),
                        "tc": dice(np.isin(clean, (1, 3)), np.isin(truth, (1, 3))),
                        "et": dice(clean == 3, truth == 3),
                        "lesions": int(lesion_map.max()),
                        "centroid_mm": c["centroid_error_mm"],
                        "diameter_pct": c["diameter_error_pct"],
                        "volume_pct": c["volume_error_pct"],
                        "brain_dice": brain_dice,
                    })
            print(f"{split} {anatomy} seed {seed}: " + ", ".join(f"{t}: WT {rows[split][str(t)][-1]['wt']:.3f}" for t in thresholds), flush=True)
    summary = {
        split: {t: {"wt": round(float(np.mean([r["wt"] for r in rs])), 3),
                    "tc": round(float(np.mean([r["tc"] for r in rs])), 3),
                    "et": round(float(np.mean([r["et"] for r in rs])), 3),
                    "single_lesion": sum(r["lesions"] == 1 for r in rs),
                    "max_centroid_mm": round(max(r["centroid_mm"] for r in rs), 2),
                    "max_abs_diameter_pct": round(max(abs(r["diameter_pct"]) for r in rs), 1),
                    "mean_abs_volume_pct": round(float(np.mean([abs(r["volume_pct"]) for r in rs])), 1),
                    "brain_extraction_dice": round(float(np.mean([r["brain_dice"] for r in rs])), 3),
                    "cases": rs}
                for t, rs in by_t.items()}
        for split, by_t in rows.items()
    }
    best = max(summary["tune"], key=lambda t: summary["tune"][t]["wt"])
    print(json.dumps({"chosen_on_tune": best, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
