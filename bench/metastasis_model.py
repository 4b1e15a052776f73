"""Held-out evaluation of the demo metastasis model and its candidate step (prints JSON).

Synthesizes metastasis cases on a head never used in training (default
``oasis``; model 0.2.0 saw Colin27, MNI152 and their warps, and its thresholds
were chosen on validation seeds of those two heads), degrades the ideal T1c like a study
(gain, bias field, Rician noise, resampling blur), z-scores it in the brain,
runs the shipped ONNX model through the runtime (``ModelStore`` →
``SessionCache`` → ``predict_volume``, 2 threads), zeroes P(lesion) outside
the brain and applies ``find_candidates`` with the manifest's ``lesions:``
rule — the analyzer's steps after preprocessing, at template level.

Reported (radnode.analyzers.metastasis.evaluation): lesion-level sensitivity
for lesions ≥ 5 mm, 3–5 mm and < 3 mm (nominal diameter; detected = a
candidate overlaps the lesion or its centroid lies within max(2 mm, radius)),
false positives per study, centroid error (mm) and relative volume error of
detected lesions ≥ 5 mm, and seconds per study (inference + candidates).
Product acceptance target on the held-out head: sensitivity ≥ 0.90 (≥ 5 mm),
≥ 0.6 (3–5 mm), ≤ 1 false positive per study, centroid ≤ 2 mm and volume
within 25 % (≥ 5 mm).

    python bench/metastasis_model.py [--anatomy oasis] [--seed 900000] [--cases 20] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radnode.analyzers.metastasis.candidates import rule_from_manifest  # noqa: E402
from radnode.analyzers.metastasis.evaluation import summarize  # noqa: E402
from radnode.analyzers.metastasis.train import HELDOUT_SEEDS, score_prepared  # noqa: E402
from radnode.analyzers.metastasis.data import prepare_case  # noqa: E402
from radnode.analyzers.runtime import CPU_PROVIDER, ModelStore, SessionCache  # noqa: E402
from radnode.synth.metastasis import synthesize_metastasis_case  # noqa: E402

MODEL = ROOT / "radnode" / "models" / "metastasis-demo"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--anatomy", default="oasis")
    ap.add_argument("--seed", type=int, default=HELDOUT_SEEDS[0])
    ap.add_argument("--cases", type=int, default=len(HELDOUT_SEEDS))
    ap.add_argument("--model", type=Path, default=MODEL)
    args = ap.parse_args(argv)
    from radnode.logconfig import configure_logging

    configure_logging("warning", "console")  # stdout is the JSON
    ref = ModelStore([args.model], builtin_dir=None).find(application="metastasis")
    model = SessionCache(providers=(CPU_PROVIDER,), threads=2).get_model(ref)
    rule = rule_from_manifest(model.manifest)
    scores, synth_s, shape = [], 0.0, None
    for seed in range(args.seed, args.seed + args.cases):
        t0 = time.perf_counter()
        p = prepare_case(synthesize_metastasis_case(seed, spacing=1.0, anatomy=args.anatomy), args.anatomy)
        synth_s += time.perf_counter() - t0
        shape = shape or list(p.t1c.shape)
        scores.append(score_prepared(model, p, rule))
    out = {
        "model": f"{model.manifest.name} {model.manifest.version}",
        "anatomy": args.anatomy,
        "seeds": [args.seed, args.seed + args.cases - 1],
        "rule": rule.model_dump(),
        **summarize(scores),
        "seconds_per_study": round(float(np.mean([s.seconds for s in scores])), 2),
        "volume_zyx": shape,
        "synthesis_seconds_per_study": round(synth_s / max(1, args.cases), 2),
        "per_study": [{"seed": s.seed, "lesions": len(s.lesions),
                       "false_positives": sum(1 for c in s.candidates if not c.matches),
                       "missed_mm": sorted(round(les.diameter_mm, 1) for les in s.lesions
                                           if not any(les.id in c.matches for c in s.candidates))}
                      for s in scores],
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
