"""Glioma pipeline timing on one generated study (a script that prints numbers).

Generates a synthetic glioma study (radnode synth), then runs what a glioma
job runs — series selection, load, register, resample, brain extraction,
normalise, inference, post-processing — and prints the seconds per stage,
the total, the peak resident memory and the Dice of the result against the
generated ground truth. Target on a 2-core CPU: under 30 s in total (the
2020 platform's FSL preprocessing alone took about 10 minutes).

    python bench/glioma.py [--seed 900100] [--cases 1] [--anatomy colin27] [--bias-correction] [--json]

With ``--cases N`` it runs N studies (seeds seed, seed+1, …) and prints the
per-case and mean Dice — the held-out evaluation of the model at the full
pipeline's output (training drew its seeds below 800000, on the mni152 head
and its warps; ``colin27``, the default here, was never used in training).

Per case it also compares the measurements a radiologist reads with the
truth, before and after post-processing (one inference, both label maps):
connected components, lesions reported, whole-tumour volume error,
centroid error and largest-axial-diameter error; and the brain extraction's
Dice against the generated brain mask.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def dice(a, b) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom


def readings(image):  # type: ignore[no-untyped-def]
    """Whole-tumour components, volume (mL), centroid (LPS) and largest axial diameter of a label image."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    from radnode.analyzers.glioma.lesions import max_axial_diameter, physical_points

    arr = sitk.GetArrayFromImage(image) > 0
    pts = physical_points(image, arr)
    return {
        "components": int(ndimage.label(arr, structure=np.ones((3, 3, 3)))[1]),
        "volume_ml": float(arr.sum()) * float(np.prod(image.GetSpacing())) / 1000.0,
        "centroid": pts.mean(axis=0) if len(pts) else np.full(3, np.nan),
        "diameter_mm": max_axial_diameter(pts),
    }


def compare(got, truth):  # type: ignore[no-untyped-def]
    import numpy as np

    return {
        "components": got["components"],
        "volume_error_pct": round(100.0 * (got["volume_ml"] - truth["volume_ml"]) / truth["volume_ml"], 1),
        "centroid_error_mm": round(float(np.linalg.norm(got["centroid"] - truth["centroid"])), 2),
        "diameter_mm": round(got["diameter_mm"], 1),
        "truth_diameter_mm": round(truth["diameter_mm"], 1),
        "diameter_error_pct": round(100.0 * (got["diameter_mm"] - truth["diameter_mm"]) / truth["diameter_mm"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=900100)
    ap.add_argument("--cases", type=int, default=1)
    ap.add_argument("--bias-correction", action="store_true")
    ap.add_argument("--anatomy", default="colin27", help="head of the generated studies (colin27 is held out)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from radnode.analyzers.base import AnalyzerInputs, SeriesInput
    from radnode.analyzers.glioma.analyzer import GliomaAnalyzer, GliomaOptions
    from radnode.logconfig import configure_logging
    from radnode.routing.classifier import load_default
    from radnode.analyzers.registry import GLIOMA
    from radnode.routing.selection import select_series
    from radnode.routing.series_index import scan_series
    from radnode.synth.glioma import generate_glioma_study

    configure_logging("warning", "console")
    analyzer = GliomaAnalyzer()
    classifier = load_default()
    reports = []
    for seed in range(args.seed, args.seed + args.cases):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            study = generate_glioma_study(root / "study", seed=seed, anatomy=args.anatomy)
            stamps: dict[str, float] = {}
            t0 = time.perf_counter()
            summaries = scan_series(root / "study" / "dicom")
            selection = select_series(GLIOMA, summaries, classifier.predict(summaries))
            stamps["select"] = time.perf_counter() - t0
            by_uid = {s.series_instance_uid: s for s in summaries}
            inputs = AnalyzerInputs(
                study_instance_uid=summaries[0].study_instance_uid,
                series={r: SeriesInput(r, c.series_instance_uid, tuple(sorted(by_uid[c.series_instance_uid].paths))) for r, c in selection.chosen.items()},
                options=GliomaOptions(bias_field_correct=args.bias_correction),
                job_id=f"bench-{seed}",
            )
            (root / "work").mkdir()
            result = analyzer.run(inputs, root / "work", lambda stage: None)
            total = time.perf_counter() - t0
            t = result.extra["timings"]
            predicted_img = sitk.ReadImage(result.extra["labels_nifti"])
            predicted = sitk.GetArrayFromImage(predicted_img)
            raw_img = sitk.ReadImage(result.extra["labels_raw_nifti"])
            truth_img = sitk.ReadImage(str(study.labels_path))
            truth = sitk.GetArrayFromImage(truth_img)
            brain_truth = sitk.ReadImage(str(study.labels_path.parent / "brain_t1c.nii.gz"))
            brain_pred = sitk.Resample(sitk.Cast(sitk.ReadImage(result.extra["brain_mask_nifti"]) > 0, sitk.sitkUInt8),
                                       brain_truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            brain_dice = dice(sitk.GetArrayFromImage(brain_pred) > 0, sitk.GetArrayFromImage(brain_truth) > 0)
            t_geo = readings(truth_img)
            before, after = readings(raw_img), readings(predicted_img)
            lesions_reported = result.extra["summary"]["lesion_count"]
        scores = {
            "whole_tumor": dice(predicted > 0, truth > 0),
            "tumor_core": dice(np.isin(predicted, (1, 3)), np.isin(truth, (1, 3))),
            "enhancing": dice(predicted == 3, truth == 3),
        }
        stages = {
            "select": stamps["select"],
            "load": t.get("preprocess_load", 0.0),
            "register": t.get("preprocess_register", 0.0),
            "resample": t.get("preprocess_resample", 0.0),
            "brain_extraction": t.get("preprocess_brain_extraction", 0.0),
            "bias_correction": t.get("preprocess_bias_correction", 0.0),
            "normalise": t.get("preprocess_normalise", 0.0),
            "infer": t.get("infer", 0.0),
            "postprocess": t.get("postprocess", 0.0),
        }
        reports.append({
            "seed": seed,
            "stages_s": {k: round(v, 2) for k, v in stages.items()},
            "total_s": round(total, 2),
            "dice": {k: round(v, 3) for k, v in scores.items()},
            "volumes_ml": result.extra["summary"]["volumes_ml"],
            "truth_volumes_ml": study.truth["volumes_ml"],
            "dice_subregions": {k: round(dice(np.isin(predicted, v), np.isin(truth, v)), 3)
                                for k, v in (("necrotic", (1,)), ("edema", (2,)))},
            "brain_extraction_dice": round(brain_dice, 3),
            "lesions_reported": lesions_reported,
            "before": compare(before, t_geo),
            "after": compare(after, t_geo),
        })
        if not args.json:
            r = reports[-1]
            print(f"seed {seed}: total {r['total_s']:.1f} s; Dice WT {r['dice']['whole_tumor']:.3f} TC {r['dice']['tumor_core']:.3f} ET {r['dice']['enhancing']:.3f}; WT {r['volumes_ml']['whole_tumor']:.1f} mL (truth {r['truth_volumes_ml']['whole_tumor']:.1f}); brain Dice {r['brain_extraction_dice']:.3f}", flush=True)
            for when in ("before", "after"):
                c = r[when]
                print(f"   {when:<6} post-processing: components {c['components']}, volume error {c['volume_error_pct']:+.1f} %, centroid error {c['centroid_error_mm']:.1f} mm, largest axial diameter {c['diameter_mm']:.1f} mm (truth {c['truth_diameter_mm']:.1f}, {c['diameter_error_pct']:+.1f} %)", flush=True)
            print(f"   lesions reported {r['lesions_reported']}", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "cases": reports,
        "mean_dice": {k: round(float(np.mean([r["dice"][k] for r in reports])), 3) for k in ("whole_tumor", "tumor_core", "enhancing")},
        "anatomy": args.anatomy,
        "mean_dice_subregions": {k: round(float(np.mean([r["dice_subregions"][k] for r in reports])), 3) for k in ("necrotic", "edema")},
        "mean_brain_extraction_dice": round(float(np.mean([r["brain_extraction_dice"] for r in reports])), 3),
        "single_lesion_cases": sum(1 for r in reports if r["lesions_reported"] == 1),
        "mean": {when: {k: round(float(np.mean([abs(r[when][k]) for r in reports])), 2)
                        for k in ("components", "volume_error_pct", "centroid_error_mm", "diameter_error_pct")}
                 for when in ("before", "after")},
        "mean_stages_s": {k: round(float(np.mean([r["stages_s"][k] for r in reports])), 2) for k in reports[0]["stages_s"]},
        "mean_total_s": round(float(np.mean([r["total_s"] for r in reports])), 2),
        "peak_rss_mb": round(peak_mb),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"\nradnode glioma pipeline — {summary['date']}, {summary['machine']}, {len(reports)} case(s) from seed {args.seed}")
    for k, v in summary["mean_stages_s"].items():
        print(f"  {k:<18} {v:7.2f} s")
    print(f"  {'total':<18} {summary['mean_total_s']:7.2f} s   (peak RSS {summary['peak_rss_mb']} MB)")
    print("  mean Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in {**summary["mean_dice"], **summary["mean_dice_subregions"]}.items()))
    print(f"  anatomy {summary['anatomy']}; brain extraction Dice {summary['mean_brain_extraction_dice']:.3f}; "
          f"single lesion reported in {summary['single_lesion_cases']}/{len(reports)} cases")
    for when, m in summary["mean"].items():
        print(f"  {when:<6} post-processing (mean |error|): components {m['components']}, volume {m['volume_error_pct']} %, "
              f"centroid {m['centroid_error_mm']} mm, largest axial diameter {m['diameter_error_pct']} %")


if __name__ == "__main__":
    main()
