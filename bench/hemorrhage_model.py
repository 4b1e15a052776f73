"""Held-out evaluation of the demo haemorrhage model (a script that prints numbers).

Generates synthetic head-CT studies (radnode synth, DICOM with gantry tilt,
thick slabs, both vendors), runs each through the analyzer's own
preprocessing (``run_ct_preprocessing`` with the manifest's grid) and the
exported ONNX model with onnxruntime (not torch), and compares the result with
the generated truth:

* study level (probability = max over slices, present = ≥ manifest threshold):
  "any" accuracy, subtype recall, false subtypes per ten studies;
* slice level: "any" AUC;
* segmentation (arg-max of ``seg_logits`` on the model grid): Dice and volume
  error per subtype;
* seconds of inference per 40 slices on 2 onnxruntime threads.

Default head: ``colin27``, never used in training (the model saw MNI152 and
its warps) nor in choosing thresholds. Every ``--none-every``-th study has no
bleed. ``--real`` also runs the real (normal) CT images that ship offline with
pydicom / pydicom-data, which must come out negative.

    python bench/hemorrhage_model.py [--anatomy colin27] [--seed 9000] [--cases 22] [--cache DIR] [--real] [--json]

``--cache DIR`` keeps the preprocessed studies (``<seed>.npz``) and reuses them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radnode.analyzers.hemorrhage.cache import StudySpec, build_study, study_spec
from radnode.analyzers.hemorrhage.train import (
    SLICE_OUTPUTS,
    load_cache,
    ort_runner,
    predict_study,
    read_answer,
    stack_context,
)
from radnode.synth.hemorrhage import SUBTYPES

MODEL = ROOT / "radnode" / "models" / "hemorrhage-demo"


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = scores[truth], scores[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def make_cache(folder: Path, anatomy: str, seed: int, cases: int, none_every: int, ct: dict) -> None:
    """Generate + preprocess the studies that are not in *folder* yet (same specs as the cache CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        s = seed + i
        out = folder / f"{s}.npz"
        if out.exists():
            continue
        spec = study_spec(s, anatomy, none_fraction=0.0)
        if none_every and i % none_every == 0:
            spec = StudySpec(spec.seed, spec.anatomy, False, None, spec.slice_mm, spec.vendor)
        summary = build_study(spec, folder / f"{s}.tmp.npz", in_plane_mm=ct["in_plane_mm"],
                              in_plane_size=ct["in_plane_size"])
        (folder / f"{s}.tmp.npz").rename(out)
        print("generated", summary, file=sys.stderr, flush=True)


def evaluate(folder: Path, seeds: list[int], onnx: Path, thresholds: dict[str, float], masked: bool = False,
             ct: dict | None = None) -> dict:
    """The model read as the analyzer reads it (manifest ``ct`` block: mask, merge, soft "any", neighbours, volume)."""
    ct = ct or {}
    run = ort_runner(onnx)
    studies = {s.name: s for s in load_cache(folder)}
    rows, all_p, all_t = [], [], []
    seg = {n: {"dice": [], "vol_true": [], "vol_pred": []} for n in SUBTYPES}
    min_volume = float(ct.get("min_subtype_volume_ml", 0.0))
    for seed in seeds:
        s = studies[str(seed)]
        lab, probs, area = predict_study(run, s.windows, inside=s.mask if masked else None)
        lab, probs = read_answer(s, lab, probs, area, float(ct.get("merge_minor_labels", 0.0)), masked,
                                 any_soft=ct.get("any_probability") == "soft-area",
                                 neighbour_share=float(ct.get("neighbour_share", 0.0)))
        sp = probs.max(0)
        truth = s.slice_truth.any(0)
        pred = np.array([sp[j] >= thresholds[n] for j, n in enumerate(SLICE_OUTPUTS)])
        if masked and not pred[0]:  # the analyzer: no subtype present without "any"
            pred[:] = False
        voxel_ml = float(np.prod(s.spacing)) / 1000.0
        for v, n in enumerate(SUBTYPES, start=1):  # the analyzer: no subtype under the reporting volume
            if masked and pred[v] and (lab == v).sum() * voxel_ml < min_volume:
                pred[v] = False
        for v, n in enumerate(SUBTYPES, start=1):
            t, p = s.labels == v, lab == v
            if t.any():
                seg[n]["dice"].append(dice(t, p))
                seg[n]["vol_true"].append(t.sum() * voxel_ml)
                seg[n]["vol_pred"].append(p.sum() * voxel_ml)
        rows.append({"seed": seed, "truth": [n for j, n in enumerate(SLICE_OUTPUTS) if truth[j] and j],
                     "pred": [n for j, n in enumerate(SLICE_OUTPUTS) if pred[j] and j],
                     "any_true": bool(truth[0]), "any_pred": bool(pred[0]), "any_prob": round(float(sp[0]), 3),
                     "probs": {n: round(float(sp[j]), 3) for j, n in enumerate(SLICE_OUTPUTS)},
                     "slices": int(s.windows.shape[0])})
        all_p.append(probs[:, 0])
        all_t.append(s.slice_truth[:, 0])
    n = len(rows)
    rec, fps = {}, 0
    for j, name in enumerate(SUBTYPES, start=1):
        tp = sum(1 for r in rows if name in r["truth"] and name in r["pred"])
        pos = sum(1 for r in rows if name in r["truth"])
        rec[name] = (tp, pos)
        fps += sum(1 for r in rows if name not in r["truth"] and name in r["pred"])
    tp_all = sum(v[0] for v in rec.values())
    pos_all = sum(v[1] for v in rec.values())
    seg_out = {}
    for name, d in seg.items():
        if d["dice"]:
            vt, vp = np.array(d["vol_true"]), np.array(d["vol_pred"])
            seg_out[name] = {"n": len(vt), "dice": round(float(np.mean(d["dice"])), 3),
                             "vol_true_ml": round(float(vt.mean()), 2),
                             "abs_vol_err_ml": round(float(np.mean(np.abs(vp - vt))), 2),
                             "rel_vol_err": round(float(np.median(np.abs(vp - vt) / np.maximum(vt, 1e-6))), 3)}
    return {
        "studies": n,
        "without_bleed": sum(1 for r in rows if not r["any_true"]),
        "any_accuracy": sum(r["any_true"] == r["any_pred"] for r in rows) / n,
        "subtype_recall": {k: f"{a}/{b}" for k, (a, b) in rec.items()},
        "subtype_recall_all": tp_all / max(pos_all, 1),
        "false_subtypes_per_10": 10.0 * fps / n,
        "slice_any_auc": auc(np.concatenate(all_p), np.concatenate(all_t).astype(bool)),
        "segmentation": seg_out,
        "rows": rows,
    }


def speed(onnx: Path, ct: dict, slices: int = 40, repeats: int = 3) -> float:
    """Seconds for one *slices*-slice study on 2 onnxruntime threads (best of *repeats*, batches of 16)."""
    run = ort_runner(onnx, threads=2)
    w = np.random.default_rng(0).random((slices, 3, ct["in_plane_size"], ct["in_plane_size"])).astype(np.float32)
    stack_context(w)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        predict_study(run, w)
        best = min(best, time.perf_counter() - t)
    return best


def real_ct_files() -> list[Path]:
    """Real CT images shipped offline with pydicom and pydicom-data (no download)."""
    import pydicom
    from pydicom.data import get_testdata_files

    found: list[Path] = []
    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # pydicom-data

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    for root in roots:
        for f in sorted(root.rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except (pydicom.errors.InvalidDicomError, OSError, ValueError):
                continue  # test files that are deliberately broken
            if ds.get("Modality") == "CT" and "ORIGINAL" in list(ds.get("ImageType", [])) and "Rows" in ds:
                found.append(f)
    del get_testdata_files
    return found


def _three_slice_series(f: Path, folder: Path) -> list[Path]:
    """A lone CT image as a 3-slice series (itself, copied one slice thickness below and above).

    The loader needs at least 3 slices for a volume; the middle grid slice is
    the real image, the copies only give it neighbours (as edge replication would).
    """
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(f)
    ds.decompress() if ds.file_meta.TransferSyntaxUID.is_compressed else None
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    step = float(ds.get("SliceThickness") or ds.get("SpacingBetweenSlices") or 5.0) or 5.0
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    out = []
    for k, off in enumerate((-1, 0, 1)):
        c = ds.copy()
        c.SOPInstanceUID = generate_uid()
        c.file_meta.MediaStorageSOPInstanceUID = c.SOPInstanceUID
        c.ImagePositionPatient = [f"{v:.4f}" for v in ipp + off * step * normal]
        c.InstanceNumber = k + 1
        path = folder / f"{k + 1}.dcm"
        c.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def run_real(onnx: Path, ct: dict, thresholds: dict[str, float], masked: bool = True) -> list[dict]:
    """Each real CT image through run_ct_preprocessing → model (as a 3-slice series, see above)."""
    import pydicom
    import SimpleITK as sitk

    from radnode.analyzers.base import InputError
    from radnode.analyzers.hemorrhage.preprocessing import (
        load_ct_series,
        model_grid,
        resample_ct,
        run_ct_preprocessing,
        window_image,
    )

    run = ort_runner(onnx)
    out = []
    for f in real_ct_files():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        info = {"file": f.name, "body_part": str(ds.get("BodyPartExamined", "")),
                "description": str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "")),
                "study": str(ds.get("StudyDescription", "")), "rows": int(ds.Rows)}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                files = _three_slice_series(f, Path(tmp))
                try:
                    res = run_ct_preprocessing(files, Path(tmp) / "work", in_plane_mm=ct["in_plane_mm"],
                                               in_plane_size=ct["in_plane_size"])
                    w = res.windows_array()
                    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(res.mask_grid)))
                except InputError as exc:
                    # The analyzer would refuse the series (no result at all); still show what the model
                    # says on the same grid centred on the image instead of the intracranial space.
                    info["preprocessing_refused"] = str(exc)[:120]
                    mask = None
                    img = load_ct_series(files).image
                    grid = model_grid(img, in_plane_mm=ct["in_plane_mm"], in_plane_size=ct["in_plane_size"])
                    arr = sitk.GetArrayFromImage(window_image(resample_ct(img, grid)))
                    w = np.ascontiguousarray(np.moveaxis(arr, -1, 1)).astype(np.float32)
            lab, probs, area = predict_study(run, w, inside=mask)
            if mask is not None and masked:
                from radnode.analyzers.hemorrhage.inference import read_inside

                lab, probs = read_inside(lab, mask > 0, float(ct.get("merge_minor_labels", 0.0)),
                                         [None, *range(1, len(SLICE_OUTPUTS))],
                                         any_area=area if ct.get("any_probability") == "soft-area" else None,
                                         neighbour_share=float(ct.get("neighbour_share", 0.0)))
            lab, probs = lab[1:2], probs[1:2]  # the real image only
            sp = probs.max(0)
            info.update(slices=int(w.shape[0]), any_prob=round(float(sp[0]), 3),
                         positive=[n for j, n in enumerate(SLICE_OUTPUTS) if sp[j] >= thresholds[n]],
                         bleed_pixels=int((lab > 0).sum()))
        except Exception as exc:  # noqa: BLE001 - a file the inference path refuses is reported, not hidden
            info["error"] = f"{type(exc).__name__}: {exc}"[:200]
        out.append(info)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--anatomy", default="colin27")
    p.add_argument("--seed", type=int, default=9000)
    p.add_argument("--cases", type=int, default=22)
    p.add_argument("--none-every", type=int, default=6)
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--real", action="store_true")
    p.add_argument("--raw", action="store_true", help="model outputs as they are, without the intracranial mask")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    manifest = yaml.safe_load((a.model / "manifest.yaml").read_text())
    ct, th = manifest["ct"], manifest["ct"]["thresholds"]
    onnx = a.model / "model.onnx"
    tmp = None
    if a.cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="hembench_")
        a.cache = Path(tmp.name)
    make_cache(a.cache, a.anatomy, a.seed, a.cases, a.none_every, ct)
    res = evaluate(a.cache, list(range(a.seed, a.seed + a.cases)), onnx, th, masked=not a.raw, ct=ct)
    res["masked"] = not a.raw
    res["seconds_per_40_slices"] = round(speed(onnx, ct), 2)
    res["anatomy"] = a.anatomy
    res["thresholds"] = th
    if a.real:
        res["real_normal_ct"] = run_real(onnx, ct, th, masked=not a.raw)
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"{'seed':>6} {'slices':>6} {'any p':>6}  truth -> predicted")
    for r in res["rows"]:
        mark = "" if set(r["truth"]) == set(r["pred"]) else "   <-"
        print(f"{r['seed']:>6} {r['slices']:>6} {r['any_prob']:>6.3f}  {','.join(r['truth']) or '-'} -> "
              f"{','.join(r['pred']) or '-'}{mark}")
    print(f"\n{a.anatomy}: {res['studies']} studies ({res['without_bleed']} without bleed)")
    print(f"study 'any' accuracy      {res['any_accuracy']:.3f}")
    print(f"subtype recall            {res['subtype_recall_all']:.3f}  {res['subtype_recall']}")
    print(f"false subtypes / 10       {res['false_subtypes_per_10']:.2f}")
    print(f"slice 'any' AUC           {res['slice_any_auc']:.4f}")
    print(f"inference s / 40 slices   {res['seconds_per_40_slices']:.2f} (onnxruntime, 2 threads)")
    print(f"\n{'subtype':<18} {'n':>3} {'Dice':>6} {'true mL':>8} {'|err| mL':>9} {'med rel err':>11}")
    for n, d in res["segmentation"].items():
        print(f"{n:<18} {d['n']:>3} {d['dice']:>6.3f} {d['vol_true_ml']:>8.2f} {d['abs_vol_err_ml']:>9.2f} "
              f"{d['rel_vol_err']:>11.3f}")
    for r in res.get("real_normal_ct", []):
        print("real CT", r)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
