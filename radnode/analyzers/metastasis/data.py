"""Training and evaluation arrays for the demo metastasis model (template space, 1 mm).

Why this exists: synthesizing a 1 mm metastasis case costs ~1–2 s and a
warped head ~20 s to load, far too slow to do per training step on two CPU
cores. Cases are therefore made once (a pool of two processes), cropped to
the brain and saved as plain ``.npy`` files that training memory-maps; the
augmentations then run on small patches. Evaluation cases (held-out seeds)
are made the same way but degraded like a scanner would (gain, bias field,
Rician noise, resampling blur) with a fixed per-seed generator, so figures
are reproducible.

DEMO ONLY: synthetic data; not for clinical use.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from scipy import ndimage

from radnode.analyzers.runtime import bounding_box
from radnode.synth.glioma import load_template
from radnode.synth.metastasis import MetCase, _sites, synthesize_metastasis_case

log = structlog.get_logger(__name__)

#: Voxels around the brain's bounding box kept in a crop (dural enhancement lies ≤ 3 mm outside).
MARGIN = 6
#: T1c intensity above which a non-lesion voxel near the brain is "enhancing" (vessel, dura):
#: the look-alikes training samples patches around (lesion 1450, vessel 1500, dura 1250, WM 840).
ENHANCING = 1100.0


@dataclass
class Prepared:
    """One case cropped to the brain: raw T1c, brain mask, lesion ids, look-alike voxels."""

    t1c: np.ndarray  # float32 / float16 (z, y, x), ideal intensities
    brain: np.ndarray  # bool
    labels: np.ndarray  # uint8, lesion id
    lookalike: np.ndarray  # bool, enhancing non-lesion voxels near the brain
    diameters: dict[int, float]  # lesion id -> nominal diameter (mm)
    seed: int
    anatomy: str
    box: tuple[slice, slice, slice]  # crop in the template grid


def brain_box(brain: np.ndarray, margin: int = MARGIN) -> tuple[slice, slice, slice]:
    """Bounding box of the brain plus *margin* voxels, clipped to the grid."""
    return bounding_box(brain, margin)  # type: ignore[return-value]


def prepare_case(case: MetCase, anatomy: str) -> Prepared:
    """Crop a synthesized case to its brain box and mark the look-alike voxels."""
    tpl = case.template
    box = brain_box(tpl.brain)
    t1c = case.images["t1c"][box].astype(np.float32)
    brain = tpl.brain[box]
    labels = case.labels[box].astype(np.uint8)
    near = ndimage.binary_dilation(brain, iterations=4)
    look = near & (labels == 0) & (t1c > ENHANCING)
    diam = {les.id: float(les.diameter_mm) for les in case.lesions if les.diameter_mm > 0}
    return Prepared(t1c, brain, labels, look, diam, case.seed, anatomy, box)


def _save(p: Prepared, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "t1c.npy", p.t1c.astype(np.float16))
    np.save(folder / "brain.npy", p.brain)
    np.save(folder / "labels.npy", p.labels)
    np.save(folder / "lookalike.npy", p.lookalike)
    meta = {"seed": p.seed, "anatomy": p.anatomy, "diameters": {str(k): v for k, v in p.diameters.items()},
            "box": [[s.start, s.stop] for s in p.box]}
    (folder / "meta.json").write_text(json.dumps(meta))


def load_prepared(folder: Path, mmap: bool = True) -> Prepared:
    """A cached case (arrays memory-mapped: training touches only patches)."""
    mode = "r" if mmap else None
    meta = json.loads((folder / "meta.json").read_text())
    return Prepared(np.load(folder / "t1c.npy", mmap_mode=mode), np.load(folder / "brain.npy", mmap_mode=mode),
                    np.load(folder / "labels.npy", mmap_mode=mode), np.load(folder / "lookalike.npy", mmap_mode=mode),
                    {int(k): float(v) for k, v in meta["diameters"].items()}, int(meta["seed"]), meta["anatomy"],
                    tuple(slice(a, b) for a, b in meta["box"]))  # type: ignore[arg-type]


def _make_anatomy(job: tuple[str, list[int], str]) -> list[str]:
    """Worker: every seed of one anatomy, then drop that head from the caches (memory)."""
    anatomy, seeds, root = job
    made = []
    for seed in seeds:
        folder = Path(root) / f"{anatomy}-{seed}"
        if (folder / "meta.json").is_file():
            made.append(str(folder))
            continue
        t0 = time.perf_counter()
        p = prepare_case(synthesize_metastasis_case(seed, spacing=1.0, anatomy=anatomy), anatomy)
        _save(p, folder)
        made.append(str(folder))
        log.info("metastasis.cache.case", anatomy=anatomy, seed=seed, lesions=len(p.diameters),
                 seconds=round(time.perf_counter() - t0, 2))
    load_template.cache_clear()
    _sites.cache_clear()
    return made


def build_cache(root: Path, jobs: list[tuple[str, list[int]]], processes: int = 2) -> list[Path]:
    """Synthesize and save every (anatomy, seeds) job, *processes* at a time; cached cases are kept."""
    root.mkdir(parents=True, exist_ok=True)
    tasks = [(a, list(s), str(root)) for a, s in jobs]
    t0 = time.perf_counter()
    if processes <= 1:
        out = [_make_anatomy(t) for t in tasks]
    else:
        with mp.get_context("fork").Pool(processes, maxtasksperchild=1) as pool:
            out = pool.map(_make_anatomy, tasks, chunksize=1)
    folders = [Path(f) for group in out for f in group]
    log.info("metastasis.cache.done", cases=len(folders), seconds=round(time.perf_counter() - t0, 1))
    return folders


# --------------------------------------------------------------------------
# What the analyzer feeds the model
# --------------------------------------------------------------------------

def zscore(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score inside the brain mask, zero outside (the analyzer's ``zscore-brain``)."""
    vals = img[mask]
    mu, sd = float(vals.mean()), float(vals.std()) or 1.0
    return np.where(mask, (img - mu) / sd, 0.0).astype(np.float32)


def scanner_like(p: Prepared, seed: int | None = None) -> np.ndarray:
    """Evaluation input: the ideal T1c degraded as a study would be, then z-scored in the brain.

    Gain 0.85–1.15, a smooth bias field (±18 %), Rician noise 1.5–3.5 % of
    white matter (the study writer's values) and a 0.5 mm Gaussian blur for
    the resampling onto the analyzer's 1 mm grid; fixed by *seed* (default:
    the case's) so every run of the bench sees the same input.
    """
    from radnode.synth.glioma import _bias, _rician

    rng = np.random.default_rng([int(p.seed if seed is None else seed), 0x3E7A])
    img = np.asarray(p.t1c, dtype=np.float32)
    img = img * rng.uniform(0.85, 1.15) * _bias(img.shape, rng, 0.18)
    img = _rician(img, rng, float(rng.uniform(0.015, 0.035)) * 840.0)
    img = ndimage.gaussian_filter(img.astype(np.float32), 0.5)
    return zscore(img, np.asarray(p.brain))
