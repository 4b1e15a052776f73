"""Preprocessed synthetic head-CT studies for training and evaluating the demo haemorrhage model.

Why a cache: the model must see what the analyzer feeds it at inference, so
every training study is written as DICOM by
:func:`radnode.synth.hemorrhage.generate_hemorrhage_study` (gantry tilt, turned
head, 2.5–5 mm slabs, vendor headers, beam hardening, noise) and read back
through :func:`~radnode.analyzers.hemorrhage.preprocessing.run_ct_preprocessing`,
exactly the inference path. That costs about a minute a study on one core, so
studies are made once and kept as small ``.npz`` files (windows as float16,
the ground-truth label map on the model grid, per-slice truth) outside the
repository; the DICOM files are deleted afterwards.

Run (one process per core; both write into the same folder)::

    python -m radnode.analyzers.hemorrhage.cache --out /tmp/hemcache/train --anatomy mni152 --warps 5 \
        --seeds 1000-1039
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import structlog

from radnode.analyzers.hemorrhage.preprocessing import run_ct_preprocessing
from radnode.synth.hemorrhage import SUBTYPES, generate_hemorrhage_study

log = structlog.get_logger(__name__)

#: Per-slice outputs of the model, in manifest order.
SLICE_OUTPUTS: tuple[str, ...] = ("any", *SUBTYPES)
NONE_FRACTION = 0.15


@dataclass(frozen=True)
class StudySpec:
    """What to generate for one cached study (all drawn from the seed, so a cache is reproducible)."""

    seed: int
    anatomy: str
    hemorrhage: bool
    subtypes: tuple[str, ...] | None
    slice_mm: float | None
    vendor: str


def study_spec(seed: int, anatomy: str, none_fraction: float = NONE_FRACTION) -> StudySpec:
    """Mixed studies: ~15 % without bleed, ~35 % one forced subtype (so rare epidurals are seen), the rest drawn.

    Slice thickness: the vendor's usual one, or forced to 2.5 / 3 / 5 mm.
    """
    rng = np.random.default_rng([int(seed), 0x5EED])
    u = rng.random()
    hemorrhage = u >= none_fraction
    subtypes = None
    if hemorrhage and u < none_fraction + 0.35:
        subtypes = (SUBTYPES[int(rng.integers(len(SUBTYPES)))],)
    slice_mm = [None, None, 2.5, 3.0, 5.0][int(rng.integers(5))]
    vendor = "ge" if rng.integers(2) else "siemens"
    return StudySpec(int(seed), anatomy, bool(hemorrhage), subtypes, slice_mm, vendor)


def grid_labels(labels_path: Path, grid_path: Path) -> np.ndarray:
    """The series label map (nearest neighbour) on the model grid, (z, y, x) uint8."""
    lab = sitk.ReadImage(str(labels_path))
    grid = sitk.ReadImage(str(grid_path))
    out = sitk.Resample(lab, grid, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def build_study(spec: StudySpec, out_file: Path, *, in_plane_mm: float, in_plane_size: int,
                keep_dicom: Path | None = None) -> dict:
    """Generate one study, preprocess it as the analyzer would, save the arrays; returns a short summary."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"hem{spec.seed}_"))
    try:
        st = generate_hemorrhage_study(tmp / "study", seed=spec.seed, hemorrhage=spec.hemorrhage,
                                       subtypes=spec.subtypes, anatomy=spec.anatomy, slice_mm=spec.slice_mm,
                                       vendor=spec.vendor)
        t1 = time.perf_counter()
        files = sorted(st.series_dir.glob("*.dcm"), key=lambda p: int(p.stem))
        res = run_ct_preprocessing(files, tmp / "work", in_plane_mm=in_plane_mm, in_plane_size=in_plane_size)
        windows = res.windows_array()
        labels = grid_labels(st.labels_path, res.mask_grid)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(res.mask_grid))).astype(np.uint8)
        per = st.truth["per_slice"]
        truth = np.array([[bool(per[s][k]) for k in SLICE_OUTPUTS] for s in res.slice_sop_instance_uids], bool)
        vols = st.truth["volumes_ml"]
        np.savez(out_file, windows=windows.astype(np.float16), labels=labels, mask=mask, slice_truth=truth,
                 seed=spec.seed, anatomy=spec.anatomy, subtypes=np.array(st.truth["subtypes_present"], dtype=str),
                 volumes_ml=np.array([vols[k] for k in SUBTYPES], np.float32),
                 spacing=np.array(sitk.ReadImage(str(res.mask_grid)).GetSpacing(), np.float32),
                 thickness=np.float32(st.truth["geometry"]["slice_thickness_mm"]), vendor=spec.vendor,
                 seconds=np.float32([t1 - t0, time.perf_counter() - t1]))
        if keep_dicom is not None:
            shutil.copytree(st.series_dir, keep_dicom, dirs_exist_ok=True)
        return {"seed": spec.seed, "anatomy": spec.anatomy, "subtypes": st.truth["subtypes_present"],
                "slices": int(windows.shape[0]), "generate_s": round(t1 - t0, 1),
                "preprocess_s": round(time.perf_counter() - t1, 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _seeds(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--anatomy", default="mni152", help="base head (its warps are added with --warps)")
    p.add_argument("--warps", type=int, default=0, help="cycle through anatomy and anatomy-warp1..N")
    p.add_argument("--seeds", required=True, help="A-B inclusive")
    p.add_argument("--in-plane-mm", type=float, default=2.0)
    p.add_argument("--in-plane-size", type=int, default=128)
    p.add_argument("--none-every", type=int, default=0, help="every N-th study without bleed (else drawn, ~15 %%)")
    p.add_argument("--deadline", type=float, default=0.0, help="stop starting new studies after this epoch time")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    heads = [a.anatomy] + [f"{a.anatomy}-warp{i}" for i in range(1, a.warps + 1)]
    for i, seed in enumerate(_seeds(a.seeds)):
        if a.deadline and time.time() > a.deadline:
            break
        out = a.out / f"{seed}.npz"
        if out.exists():
            continue
        spec = study_spec(seed, heads[i % len(heads)])
        if a.none_every:
            spec = study_spec(seed, spec.anatomy, none_fraction=0.0)
            if i % a.none_every == 0:
                spec = StudySpec(spec.seed, spec.anatomy, False, None, spec.slice_mm, spec.vendor)
        summary = build_study(spec, out.with_suffix(".tmp.npz"), in_plane_mm=a.in_plane_mm,
                              in_plane_size=a.in_plane_size)
        out.with_suffix(".tmp.npz").rename(out)
        print("cached", summary, flush=True)


if __name__ == "__main__":
    main()
