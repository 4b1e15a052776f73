"""The metastasis application end to end on generated studies of a head it was not trained on.

Each case is a DICOM study written by ``radnode synth metastasis`` on the
held-out anatomy (OASIS; the demo model 0.2.0 trains on Colin27, MNI152 and their warps),
run through :class:`~radnode.analyzers.metastasis.analyzer.MetastasisAnalyzer`
exactly as a job runs it (series from the folder, nipype preprocessing, ONNX
model, candidate step, measurements), and scored lesion by lesion against the
generator's truth:

* a true lesion is *detected* when a found lesion's voxels overlap it on the
  native T1c grid, or its centroid lies within max(2 mm, the true lesion's
  radius) of the found one's; each found lesion counts for at most one truth;
* sensitivity for lesions ≥ 5 mm and 3–5 mm (longest 3-D diameter of the
  truth label map), false positives per study (found lesions matching none);
* for detected lesions ≥ 5 mm: centroid error (mm) and relative volume error;
* seconds per study (analysis only; 2 CPU cores in the figures quoted).

Targets (issue 17): sensitivity ≥ 0.90 (≥ 5 mm), ≥ 0.6 (3–5 mm), ≤ 1 false
positive per study, centroid ≤ 2 mm and volume within 25 % (≥ 5 mm), ≤ 45 s.

Run::

    python bench/metastasis.py --cases 10 --out /tmp/met-bench [--seed 930000] [--anatomy oasis]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def score_case(found_labels: np.ndarray, found: list[dict], truth: dict, truth_labels: np.ndarray) -> dict:
    """Lesion-level matching of one case (arrays on the same native T1c grid)."""
    used: set[int] = set()
    rows = []
    for t in truth["lesions"]:
        if t["voxels"] == 0:  # resolved in a follow-up: nothing to find
            continue
        here = truth_labels == t["id"]
        overlap = np.unique(found_labels[here])
        hit = next((int(v) for v in overlap if v > 0 and int(v) not in used), None)
        if hit is None:
            radius = max(2.0, t["longest_diameter_mm"] / 2.0)
            for f in found:
                if f["id"] not in used and np.linalg.norm(np.subtract(f["centroid_lps_mm"], t["centroid_lps_mm"])) <= radius:
                    hit = f["id"]
                    break
        row = {"id": t["id"], "diameter_mm": t["longest_diameter_mm"], "volume_ml": t["volume_ml"], "detected": hit is not None}
        if hit is not None:
            used.add(hit)
            f = next(x for x in found if x["id"] == hit)
            row["centroid_error_mm"] = float(np.linalg.norm(np.subtract(f["centroid_lps_mm"], t["centroid_lps_mm"])))
            row["volume_error"] = (f["volume_ml"] - t["volume_ml"]) / t["volume_ml"] if t["volume_ml"] > 0 else None
        rows.append(row)
    return {"lesions": rows, "false_positives": len([f for f in found if f["id"] not in used])}


def summarise(cases: list[dict]) -> dict:
    lesions = [les for c in cases for les in c["lesions"]]
    big = [les for les in lesions if les["diameter_mm"] >= 5.0]
    small = [les for les in lesions if 3.0 <= les["diameter_mm"] < 5.0]
    big_hits = [les for les in big if les["detected"]]

    def rate(group: list[dict]) -> float | None:
        return round(sum(les["detected"] for les in group) / len(group), 3) if group else None

    return {
        "studies": len(cases),
        "lesions_ge_5mm": len(big), "sensitivity_ge_5mm": rate(big),
        "lesions_3_to_5mm": len(small), "sensitivity_3_to_5mm": rate(small),
        "false_positives_per_study": round(sum(c["false_positives"] for c in cases) / max(len(cases), 1), 2),
        "centroid_error_mm_median": round(statistics.median([x["centroid_error_mm"] for x in big_hits]), 2) if big_hits else None,
        "centroid_error_mm_max": round(max([x["centroid_error_mm"] for x in big_hits]), 2) if big_hits else None,
        "centroid_within_2mm": rate([{"detected": x["centroid_error_mm"] <= 2.0} for x in big_hits]),
        "volume_error_median_abs": round(statistics.median([abs(x["volume_error"]) for x in big_hits]), 3) if big_hits else None,
        "volume_within_25pct": rate([{"detected": abs(x["volume_error"]) <= 0.25} for x in big_hits]),
        "seconds_median": round(statistics.median([c["seconds"] for c in cases]), 1) if cases else None,
        "seconds_max": round(max([c["seconds"] for c in cases]), 1) if cases else None,
    }


def run_case(analyzer, study, work: Path) -> dict:  # type: ignore[no-untyped-def]
    from radnode.analyzers.base import AnalyzerInputs, SeriesInput
    from radnode.analyzers.metastasis.analyzer import MetastasisOptions

    series = {s.label: SeriesInput(s.label, s.series_instance_uid, tuple(sorted(s.files)), s.label, 1.0)
              for s in study.study.series}
    inputs = AnalyzerInputs(study_instance_uid=study.study.study_instance_uid, series=series,
                            options=MetastasisOptions(), job_id=f"bench-{study.seed}")
    t0 = time.perf_counter()
    result = analyzer.run(inputs, work, lambda stage: None)
    seconds = time.perf_counter() - t0
    found_labels = result.label_maps[0].array
    truth_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(study.labels_path)))
    found = result.extra["summary"]["lesions"]
    scored = score_case(found_labels, found, study.truth, truth_labels)
    scored.update(seed=study.seed, seconds=round(seconds, 2), found=len(found), truth=study.truth["lesion_count"],
                  timings={k: round(v, 2) for k, v in result.extra["timings"].items()})
    return scored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=930_000)
    parser.add_argument("--anatomy", default="oasis")
    parser.add_argument("--out", type=Path, default=Path("/tmp/met-bench"))
    args = parser.parse_args(argv)

    from radnode.logconfig import configure_logging

    configure_logging("warning", "console")  # stdout is the JSON
    from radnode.analyzers.metastasis.analyzer import MetastasisAnalyzer
    from radnode.synth.metastasis import generate_metastasis_study

    analyzer = MetastasisAnalyzer()
    cases = []
    for k in range(args.cases):
        seed = args.seed + k
        study = generate_metastasis_study(args.out / f"s{seed}", seed=seed, anatomy=args.anatomy)
        work = args.out / f"s{seed}" / "work"
        work.mkdir(parents=True, exist_ok=True)
        case = run_case(analyzer, study, work)
        cases.append(case)
        print(json.dumps({k: v for k, v in case.items() if k != "lesions"}), flush=True)
    print(json.dumps({"model": analyzer.spec.model.name + " " + analyzer.spec.model.version,  # type: ignore[union-attr]
                      "anatomy": args.anatomy, **summarise(cases), "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
