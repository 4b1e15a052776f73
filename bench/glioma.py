"""Glioma pipeline timing on one generated study (a script that prints numbers).

Generates a synthetic glioma study (radnode synth), then runs what a glioma
job runs — series selection, load, register, resample, brain extraction,
normalise, inference, post-processing — and prints the seconds per stage,
the total, the peak resident memory and the Dice of the result against the
generated ground truth. Target on a 2-core CPU: under 30 s in total (the
2020 platform's FSL preprocessing alone took about 10 minutes).

    python bench/glioma.py [--seed 900100] [--cases 1] [--bias-correction] [--json]

With ``--cases N`` it runs N studies (seeds seed, seed+1, …) and prints the
per-case and mean Dice — the held-out evaluation of the model at the full
pipeline's output (training drew its seeds below 800000).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=900100)
    ap.add_argument("--cases", type=int, default=1)
    ap.add_argument("--bias-correction", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import SimpleITK as sitk

    from radnode.analyzers.base import AnalyzerInputs, SeriesInput
    from radnode.analyzers.glioma.analyzer import GliomaAnalyzer, GliomaOptions
    from radnode.logconfig import configure_logging
    from radnode.routing.classifier import load_default
    from radnode.routing.selection import GLIOMA, select_series
    from radnode.routing.series_index import scan_series
    from radnode.synth.glioma import generate_glioma_study

    configure_logging("warning", "console")
    analyzer = GliomaAnalyzer()
    classifier = load_default()
    reports = []
    for seed in range(args.seed, args.seed + args.cases):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            study = generate_glioma_study(root / "study", seed=seed)
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
            predicted = sitk.GetArrayFromImage(sitk.ReadImage(result.extra["labels_nifti"]))
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(study.labels_path)))
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
        })
        if not args.json:
            r = reports[-1]
            print(f"seed {seed}: total {r['total_s']:.1f} s; Dice WT {r['dice']['whole_tumor']:.3f} TC {r['dice']['tumor_core']:.3f} ET {r['dice']['enhancing']:.3f}; WT {r['volumes_ml']['whole_tumor']:.1f} mL (truth {r['truth_volumes_ml']['whole_tumor']:.1f})", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "cases": reports,
        "mean_dice": {k: round(float(np.mean([r["dice"][k] for r in reports])), 3) for k in ("whole_tumor", "tumor_core", "enhancing")},
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
    print("  mean Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["mean_dice"].items()))


if __name__ == "__main__":
    main()
