"""Choose the metastasis candidate rule on end-to-end studies of the *training* heads (prints JSON).

Why this exists: the training script chooses the manifest's ``lesions:``
rule at template level (exact brain masks, ideal geometry). Through the
DICOM pipeline the probability map is blurred by two resamplings and the
deepbet brain mask keeps a rim of dura, so small lesions peak lower and
false candidates appear at the mask's edge — figures the template level
cannot show. This script runs :class:`MetastasisAnalyzer` exactly as a job
runs it (``save_probabilities``) on DICOM studies of the heads the model was
trained on (seeds never trained on), keeps each study's P(lesion) map, brain
mask and truth labels on the model grid, and searches the same grid as
``choose_rule`` plus the depth test. The held-out head is never passed here:
its figures come from ``bench/metastasis.py`` with the rule this script
chose.

Per lesion it also reports the peak probability and the depth inside the
brain mask of every missed lesion ≥ 3 mm, which says whether a miss is the
model's (low peak) or the rule's.

    python bench/metastasis_rule.py --anatomies colin27,mni152 --seed 800100 --cases 7 --out /tmp/met-rule \
        --seed-thresholds 0.8 --grow-thresholds 0.2,0.3,0.4

The full grid (6 seed × 4 grow × 3 depth thresholds) labels every study's
whole map ~70 times: ~1 hour for 14 studies on 2 cores. The shipped rule of
metastasis-demo 0.2.0 came from the narrower search above (seed 0.8 from the
training script's template-level choice).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Depth thresholds searched besides the template-level grid (None = no depth test).
DEPTH_GRID: tuple[float | None, ...] = (None, 3.0, 5.0)


def run_study(analyzer, anatomy: str, seed: int, root: Path) -> Path:  # type: ignore[no-untyped-def]
    """Analyze one generated study and save (probability, brain, truth labels, diameters) on the model grid."""
    from radnode.analyzers.base import AnalyzerInputs, SeriesInput
    from radnode.analyzers.metastasis.analyzer import MetastasisOptions
    from radnode.synth.metastasis import generate_metastasis_study

    out = root / f"{anatomy}-{seed}.npz"
    if out.exists():
        return out
    study = generate_metastasis_study(root / f"{anatomy}-{seed}", seed=seed, anatomy=anatomy)
    series = {s.label: SeriesInput(s.label, s.series_instance_uid, tuple(sorted(s.files)), s.label, 1.0)
              for s in study.study.series}
    inputs = AnalyzerInputs(study_instance_uid=study.study.study_instance_uid, series=series,
                            options=MetastasisOptions(save_probabilities=True), job_id=f"rule-{seed}")
    work = root / f"{anatomy}-{seed}" / "work"
    work.mkdir(parents=True, exist_ok=True)
    result = analyzer.run(inputs, work, lambda stage: None)
    prob_img = sitk.ReadImage(str(work / "lesion_probability.nii.gz"))

    def onto_grid(path: str | Path) -> np.ndarray:
        img = sitk.ReadImage(str(path))
        return sitk.GetArrayFromImage(sitk.Resample(img, prob_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0))

    brain = onto_grid(result.extra["brain_mask_nifti"]) > 0
    labels = onto_grid(study.labels_path).astype(np.uint8)
    diam = {int(t["id"]): float(t["longest_diameter_mm"]) for t in study.truth["lesions"] if t["voxels"] > 0}
    t1c = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "t1c_model_input.nii.gz"))).astype(np.float16)
    np.savez_compressed(out, prob=sitk.GetArrayFromImage(prob_img).astype(np.float16), t1c=t1c, brain=brain, labels=labels,
                        ids=np.array(list(diam), dtype=np.int32), diameters=np.array(list(diam.values())), seed=seed)
    return out


def load(path: Path):  # type: ignore[no-untyped-def]
    """(Prepared-like case, probability) as ``choose_rule`` takes them."""
    from radnode.analyzers.metastasis.data import Prepared

    z = np.load(path)
    diam = {int(i): float(d) for i, d in zip(z["ids"], z["diameters"])}
    brain = z["brain"]
    p = Prepared(z["t1c"].astype(np.float32), brain, z["labels"], np.zeros((1, 1, 1), bool), diam,
                 int(z["seed"]), path.stem.rsplit("-", 1)[0], (slice(None),) * 3)
    return p, z["prob"].astype(np.float32)


def misses(cases, rule) -> list[dict]:  # type: ignore[no-untyped-def]
    """Lesions ≥ 3 mm the rule misses: diameter, peak P inside (1-voxel margin) and depth in the brain mask.

    The margin is dilated inside each lesion's own bounding box (plus 2 voxels), not over the whole
    volume: a whole-volume dilation per lesion took ~20 s per study.
    """
    from scipy import ndimage

    from radnode.analyzers.metastasis.candidates import find_candidates
    from radnode.analyzers.metastasis.evaluation import score_case
    from radnode.analyzers.metastasis.train import SPACING_ZYX

    out = []
    for p, prob in cases:
        lesion_map, cands = find_candidates(prob, p.brain, SPACING_ZYX, rule, image=p.t1c)
        sc = score_case(p.seed, lesion_map, cands, p.labels, p.diameters, SPACING_ZYX)
        hit = {i for s in sc.candidates for i in s.matches}
        depth = ndimage.distance_transform_edt(p.brain, sampling=SPACING_ZYX)
        boxes = ndimage.find_objects(p.labels)
        for les in sc.lesions:
            if les.id in hit or les.diameter_mm < 3.0:
                continue
            box = tuple(slice(max(0, b.start - 2), b.stop + 2) for b in boxes[les.id - 1])
            inside = p.labels[box] == les.id
            out.append({"study": f"{p.anatomy}-{p.seed}", "diameter_mm": round(les.diameter_mm, 1),
                        "peak": round(float(prob[box][ndimage.binary_dilation(inside)].max()), 3),
                        "depth_mm": round(float(depth[box][inside].max()), 1)})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--anatomies", default="colin27,mni152", help="training heads only (comma-separated)")
    ap.add_argument("--seed", type=int, default=800_100)
    ap.add_argument("--cases", type=int, default=10, help="studies per head")
    ap.add_argument("--out", type=Path, default=Path("/tmp/met-rule"))
    ap.add_argument("--seed-thresholds", help="comma-separated seed thresholds to search (default: choose_rule's grid)")
    ap.add_argument("--grow-thresholds", help="comma-separated grow thresholds to search (default: choose_rule's grid)")
    ap.add_argument("--small", action="store_true",
                    help="then search the small-lesion detector's thresholds (lesions.small) on top of the chosen rule")
    ap.add_argument("--depths", help="comma-separated depth tests in mm, 'none' for no test (default: none,3,5)")
    args = ap.parse_args(argv)
    from radnode.logconfig import configure_logging

    configure_logging("warning", "console")
    from radnode.analyzers.metastasis.analyzer import MetastasisAnalyzer
    from radnode.analyzers.metastasis.train import GROW_GRID, SEED_GRID, choose_rule

    def floats(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in text.split(",")) if text else default

    args.out.mkdir(parents=True, exist_ok=True)
    analyzer = MetastasisAnalyzer()
    paths = [run_study(analyzer, a, args.seed + k, args.out)
             for a in args.anatomies.split(",") for k in range(args.cases)]
    cases = [load(p) for p in paths]
    depths = (tuple(None if v.strip().lower() == "none" else float(v) for v in args.depths.split(","))
              if args.depths else DEPTH_GRID)
    rule, summary, table = choose_rule(cases, depth_grid=depths, seed_grid=floats(args.seed_thresholds, SEED_GRID),
                                       grow_grid=floats(args.grow_thresholds, GROW_GRID))
    small_rule, model_only, small_summary, small_table = (choose_small(cases, rule) if args.small
                                                           else (rule, summary, summary, []))
    print(json.dumps({"model": f"{analyzer.spec.model.name} {analyzer.spec.model.version}",  # type: ignore[union-attr]
                      "studies": [p.stem for p in paths], "rule": small_rule.model_dump(), "summary": small_summary,
                      "model_only_summary": model_only, "small_thresholds": small_table,
                      "missed": misses(cases, small_rule), "rules_searched": len(table),
                      "thresholds": [compact(t) for t in table if t["rule"]["min_volume_mm3"] == 0.0
                                     and t["rule"]["max_elongation"] == 2.5]}, indent=1))


#: Small-lesion detector thresholds searched (``lesions.small``): blobness × smoothed intensity (z).
BLOBNESS_GRID = (0.25, 0.3, 0.35, 0.4)
INTENSITY_GRID = (1.0,)
#: ... × roundness of the blob's region (None = no test); blobs above ``SMALL_MAX_VOLUME_MM3`` are dropped.
ROUNDNESS_GRID: tuple[float | None, ...] = (1.4, 1.6)
SMALL_MAX_VOLUME_MM3 = 40.0
#: The detector may add at most this many false positives per study to the model's.
SMALL_FP_BUDGET = 0.5


def choose_small(cases, rule):  # type: ignore[no-untyped-def]
    """The ``lesions.small`` thresholds finding the most lesions >= 3 mm within ``SMALL_FP_BUDGET`` more false
    positives per study than *rule* alone (ties: fewer false positives, then higher thresholds)."""
    from scipy import ndimage

    from radnode.analyzers.metastasis.candidates import find_candidates
    from radnode.analyzers.metastasis.evaluation import score_case, summarize
    from radnode.analyzers.metastasis.train import SPACING_ZYX
    from radnode.analyzers.runtime.manifests import SmallLesionSpec

    depths = [ndimage.distance_transform_edt(p.brain, sampling=SPACING_ZYX) for p, _ in cases]

    def run(r) -> dict:  # type: ignore[no-untyped-def]
        scores = []
        for (p, prob), depth in zip(cases, depths):
            lesion_map, cands = find_candidates(prob, p.brain, SPACING_ZYX, r, depth, image=p.t1c)
            scores.append(score_case(p.seed, lesion_map, cands, p.labels, p.diameters, SPACING_ZYX))
        return summarize(scores)

    base = run(rule)
    rows = []
    for b, i, e in itertools.product(BLOBNESS_GRID, INTENSITY_GRID, ROUNDNESS_GRID):
        small = SmallLesionSpec(min_blobness=b, min_intensity=i, max_elongation=e, max_volume_mm3=SMALL_MAX_VOLUME_MM3)
        r = rule.model_copy(update={"small": small})
        rows.append({"rule": r, "summary": run(r)})
    budget = base["false_positives_per_study"] + SMALL_FP_BUDGET
    ok = [t for t in rows if t["summary"]["false_positives_per_study"] <= budget]

    def found(summ: dict) -> int:
        return summ["lesions"]["ge5"]["found"] + summ["lesions"]["3to5"]["found"]

    best = max(ok, key=lambda t: (found(t["summary"]), -t["summary"]["false_positives_per_study"],
                                  t["rule"].small.min_blobness, t["rule"].small.min_intensity)) if ok else None
    table = [{**compact({"rule": t["rule"].model_dump(), "summary": t["summary"]}),
              "min_blobness": t["rule"].small.min_blobness, "min_intensity": t["rule"].small.min_intensity,
              "max_elongation": t["rule"].small.max_elongation}
             for t in rows]
    return (best["rule"] if best else rule), base, (best["summary"] if best else base), table


def compact(row: dict) -> dict:
    """One searched rule in a line: thresholds, lesions found per size class, false positives, volumes."""
    r, s = row["rule"], row["summary"]
    vol = s.get("relative_volume_error_ge5") or {}
    return {"seed": r["seed_threshold"], "grow": r["grow_threshold"], "depth": r["min_depth_mm"],
            "ge5": f"{s['lesions']['ge5']['found']}/{s['lesions']['ge5']['total']}",
            "3to5": f"{s['lesions']['3to5']['found']}/{s['lesions']['3to5']['total']}",
            "fp_per_study": s["false_positives_per_study"], "volume_median_error": vol.get("median"),
            "volume_within_25pct": s.get("ge5_volume_within_25pct")}


if __name__ == "__main__":
    main()
