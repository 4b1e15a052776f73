"""Synthetic brain-metastasis MR studies (3D T1 post-contrast, FLAIR) with per-lesion truth.

Why this exists: a metastasis analyzer (detection, counting, RANO-BM
measurement, follow-up matching) needs end-to-end input whose right answer
is known lesion by lesion, and no patient data can ship with radnode. A
study made here looks like a scanner's: a 3D ~1 mm T1 after gadolinium
(sagittal or axial) and a FLAIR (2D axial 4–5 mm or 3D), a tilted head,
Siemens- or GE-like headers, bias field and Rician noise — all machinery of
:mod:`radnode.synth.glioma`, reused here. Painted on the anatomy:

* 0–15 lesions of 2–30 mm (log-uniform: many small), solid or, above
  ~10 mm, ring-enhancing with a necrotic centre, at the grey–white junction,
  in deep grey matter, the cerebellum and the brainstem, never overlapping;
  vasogenic oedema on FLAIR (and low T1) in proportion to size (none below
  5 mm);
* look-alikes that are not lesions: enhancing vessels (thin tubes along the
  brain surface and a few deep ones) and dural enhancement (thin patches
  along the inner table);
* follow-up exams of the same patient in which lesions enlarge, stay,
  shrink, resolve or appear, with lesion ids stable across exams.

Sites are approximated from template coordinates: both heads (Colin27 and
MNI152, and their warps, which move anatomy by a few mm only) are in MNI
space, so the cerebellum is the inferior-posterior box of the brain mask
(MNI z < −18, y < −42, |x| > 8), the brainstem a midline box in front of it
(|x| ≤ 9, −40 < y < −16, −50 < z < −12), deep grey matter grey-matter-rich
voxels around the thalami and basal ganglia (8 ≤ |x| ≤ 30, −30 < y < 20,
−8 < z < 18) and the grey–white junction supratentorial voxels where the
white- and grey-matter fractions meet (both ≥ 0.25). No atlas ships offline.

Truth (``ground_truth/truth.json``) is measured on the written label map
(T1c geometry, value = lesion id): volume = voxels × voxel volume, centroid
in patient LPS mm, 3-D longest diameter and longest axial diameter
(voxel-centre distance plus one pixel). Everything is a pure function of
the seed.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import structlog
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from radnode.synth.glioma import (
    SeriesGeometry,
    Template,
    _bias,
    _grid,
    _outside_distance,
    _random_rotation,
    _resample,
    _rician,
    _series_pixels,
    _unit,
    _write_series,
    check_anatomy,
    load_template,
)
from radnode.synth.mr_study import _VENDORS, GeneratedSeries, GeneratedStudy, _Protocol
from radnode.uids import derive_uid

log = structlog.get_logger(__name__)

__all__ = [
    "SITES",
    "Lesion",
    "LookAlike",
    "MetCase",
    "MetastasisStudy",
    "generate_metastasis_study",
    "synthesize_metastasis_case",
]

#: Lesion sites (truth ``site``).
SITES: tuple[str, ...] = ("grey-white junction", "deep grey", "cerebellum", "brainstem")
_SITE_P = (0.68, 0.10, 0.16, 0.06)
_SITE_MAX_D = {"grey-white junction": 30.0, "deep grey": 22.0, "cerebellum": 28.0, "brainstem": 14.0}
MAX_LESIONS = 15

# Ideal intensities (before bias, gain and noise).
_INTENSITY: dict[str, dict[str, float]] = {
    "t1c": dict(wm=840, gm=580, csf=170, nonbrain=820, edema=600, enh=1450, nec=260, vessel=1500, dura=1250),
    "flair": dict(wm=560, gm=760, csf=90, nonbrain=520, edema=1350, enh=1000, nec=900),
}


# --------------------------------------------------------------------------
# Sites
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sites:
    masks: dict[str, np.ndarray]  # site -> candidate voxels
    depth: np.ndarray  # mm inside the brain (negative outside)


@functools.lru_cache(maxsize=8)
def _sites(spacing: float, anatomy: str) -> _Sites:
    tpl = load_template(spacing, anatomy)
    depth = -_outside_distance(tpl.brain) * tpl.spacing
    zz, yy, xx = np.indices(tpl.shape, sparse=True)
    x = tpl.origin[0] + tpl.direction[0] * xx * tpl.spacing  # LPS: +x left, +y posterior
    y = tpl.origin[1] + tpl.direction[4] * yy * tpl.spacing
    z = tpl.origin[2] + tpl.direction[8] * zz * tpl.spacing
    ax = np.abs(x)
    tissue = tpl.brain & (tpl.p_wm + tpl.p_gm > 0.8) & (tpl.p_csf < 0.2)
    cereb = tissue & (z < -18) & (y > 42) & (ax > 8)
    stem = tissue & (ax <= 9) & (y > 16) & (y < 40) & (z > -50) & (z < -12)
    deep_box = (ax >= 8) & (ax <= 30) & (y > -20) & (y < 30) & (z > -8) & (z < 18)
    deep = tissue & deep_box & (tpl.p_gm > 0.45) & (depth > 18)
    supra = (z > -30) & ~((y > 30) & (z < -10))
    gwj = tissue & supra & ~deep_box & (tpl.p_wm >= 0.25) & (tpl.p_gm >= 0.25) & (ax > 4)
    return _Sites({"grey-white junction": gwj, "deep grey": deep, "cerebellum": cereb, "brainstem": stem},
                  depth.astype(np.float32))


# --------------------------------------------------------------------------
# Lesions and look-alikes
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Lesion:
    """One metastasis in template space (ids stable across exams of a patient)."""

    id: int
    centre_mm: tuple[float, float, float]  # template LPS
    diameter_mm: float  # nominal (drawn) diameter at this exam; 0 = resolved
    kind: str  # "solid" | "ring"
    site: str
    hemisphere: str  # "left" | "right" | "midline"
    ratios: tuple[float, float, float]
    rotation: tuple[float, ...]  # 3×3 row-major
    shape: tuple[float, ...]  # surface perturbation: 3 unit vectors + 3 amplitudes
    necrotic_fraction: float
    edema_factor: float
    status: str = "baseline"  # follow-ups: new / enlarging / stable / shrinking / resolved
    baseline_diameter_mm: float | None = None


@dataclass(frozen=True)
class LookAlike:
    """An enhancing structure that is NOT a lesion (vessel or dural enhancement)."""

    kind: str  # "vessel" | "dural enhancement"
    points_mm: tuple[tuple[float, float, float], ...]  # template LPS, on the structure
    size_mm: float  # vessel radius or patch radius


def _hemisphere(x_lps: float) -> str:
    return "midline" if abs(x_lps) < 3.0 else ("left" if x_lps > 0 else "right")


def _draw_count(rng: np.random.Generator) -> int:
    p = 0.82 ** np.arange(MAX_LESIONS + 1)
    return int(rng.choice(MAX_LESIONS + 1, p=p / p.sum()))


def _draw_lesions(tpl: Template, sites: _Sites, rng: np.random.Generator, count: int,
                  placed: list[Lesion] | None = None, first_id: int = 1, max_d: float = 30.0) -> list[Lesion]:
    """*count* non-overlapping lesions (sizes log-uniform 2–*max_d* mm), avoiding *placed* ones."""
    out: list[Lesion] = []
    others = list(placed or [])
    cand_cache: dict[str, np.ndarray] = {}
    for n in range(count):
        d = math.exp(rng.uniform(math.log(2.0), math.log(max_d)))
        site = SITES[int(rng.choice(len(SITES), p=_SITE_P))]
        for attempt in range(60):
            d_try = min(d * 0.85 ** (attempt // 15), _SITE_MAX_D[site])
            r = d_try / 2.0
            key = site
            if key not in cand_cache:
                cand_cache[key] = np.argwhere(sites.masks[site])
            cand = cand_cache[key]
            if not len(cand):
                site = "grey-white junction"
                continue
            c = cand[rng.integers(len(cand))]
            if sites.depth[tuple(c)] < max(1.5, 0.8 * r):
                continue
            c_mm = tpl.index_to_lps(c)
            if any(np.linalg.norm(c_mm - np.asarray(o.centre_mm)) < r + o.diameter_mm / 2 + 3.0 for o in others):
                continue
            break
        else:
            continue  # no room: fewer lesions than asked (rare; logged by the caller's count)
        ratios = np.exp(rng.normal(0.0, 0.08, 3))
        ratios = ratios / np.prod(ratios) ** (1 / 3)
        q = _random_rotation(rng, 0.0, 180.0)
        vecs = rng.standard_normal((3, 3))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        amps = rng.uniform(-0.08, 0.08, 3)
        ring_p = 0.0 if d_try <= 10.0 else min(0.85, 0.35 + 0.04 * (d_try - 10.0))
        kind = "ring" if rng.random() < ring_p else "solid"
        les = Lesion(first_id + len(out), tuple(float(v) for v in c_mm), round(float(d_try), 3), kind, site,
                     _hemisphere(float(c_mm[0])), tuple(float(v) for v in ratios),
                     tuple(float(v) for v in q.ravel()), tuple(float(v) for v in (*vecs.ravel(), *amps)),
                     float(rng.uniform(0.4, 0.7)), float(np.exp(rng.normal(0.0, 0.25))))
        out.append(les)
        others.append(les)
    return out


@dataclass
class _Painted:
    box: tuple[slice, slice, slice]
    inside: np.ndarray  # bool, lesion voxels (label)
    f_enh: np.ndarray  # soft fractions
    f_nec: np.ndarray
    f_edema: np.ndarray


def _render(tpl: Template, les: Lesion) -> _Painted | None:
    """Voxelise one lesion (and its oedema) in a box of the template grid."""
    if les.diameter_mm <= 0:
        return None
    sp = tpl.spacing
    r = les.diameter_mm / 2.0
    edema_r = 0.0 if les.diameter_mm < 5.0 else r * (1.0 + les.edema_factor * min(1.6, 0.25 + (les.diameter_mm - 5.0) / 14.0))
    reach = max(r * 1.25, edema_r * 1.3) + 2 * sp
    d_inv = np.linalg.inv(np.asarray(tpl.direction).reshape(3, 3))
    c_idx = (d_inv @ (np.asarray(les.centre_mm) - np.asarray(tpl.origin)) / sp)[::-1]  # (z, y, x)
    half = int(math.ceil(reach / sp)) + 1
    ci = np.rint(c_idx).astype(int)
    box = tuple(slice(max(0, c - half), min(n, c + half + 1)) for c, n in zip(ci, tpl.shape))
    idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), axis=-1)
    offs = tpl.index_to_lps(idx) - np.asarray(les.centre_mm)
    q = np.asarray(les.rotation).reshape(3, 3)
    local = offs @ q
    a = r * np.asarray(les.ratios)
    rad = np.sqrt(np.sum((local / a) ** 2, axis=-1))
    norm = np.linalg.norm(offs, axis=-1)
    u = offs / np.maximum(norm, 1e-6)[..., None]
    vecs = np.asarray(les.shape[:9]).reshape(3, 3)
    amps = np.asarray(les.shape[9:])
    pert = sum(amps[k] * (3.0 * (u @ vecs[k]) ** 2 - 1.0) for k in range(3))
    brain = tpl.brain[box]
    inside = (rad < 1.0 + pert) & brain
    centre_local = tuple(int(c - s.start) for c, s in zip(ci, box))
    inside[centre_local] = True  # a 2 mm lesion on a 2 mm grid keeps at least one voxel
    soft = max(0.35, 0.5 / sp)
    f_les = np.clip(ndimage.gaussian_filter(inside.astype(np.float32), soft), 0.0, 1.0)
    f_les = np.maximum(f_les, inside * 0.85).astype(np.float32)
    if les.kind == "ring":
        nec = (rad < les.necrotic_fraction * (1.0 + pert)) & inside
        f_nec = np.clip(ndimage.gaussian_filter(nec.astype(np.float32), soft), 0.0, 1.0) * f_les
    else:
        f_nec = np.zeros_like(f_les)
    if edema_r > 0:
        p_wm = tpl.p_wm[box]
        ed = (norm / edema_r - 0.25 * (p_wm - 0.5) < 1.0 + 0.6 * pert) & brain & (tpl.p_csf[box] < 0.5) & ~inside
        f_ed = np.clip(ndimage.gaussian_filter(ed.astype(np.float32), max(0.7, 1.2 / sp)), 0.0, 1.0)
        f_ed = (f_ed * (1.0 - f_les) * brain).astype(np.float32)
    else:
        f_ed = np.zeros_like(f_les)
    return _Painted(box, inside, (f_les - f_nec).astype(np.float32), f_nec.astype(np.float32), f_ed)


def _walk(tpl: Template, rng: np.random.Generator, allowed: np.ndarray, avoid: list[Lesion],
          steps: int) -> np.ndarray | None:
    """A smooth random curve (1 mm steps) that stays in *allowed* and away from lesions."""
    cand = np.argwhere(allowed)
    if not len(cand):
        return None
    d_inv = np.linalg.inv(np.asarray(tpl.direction).reshape(3, 3))

    def ok(p: np.ndarray) -> bool:
        zyx = np.rint((d_inv @ (p - np.asarray(tpl.origin)) / tpl.spacing)[::-1]).astype(int)
        if np.any(zyx < 0) or np.any(zyx >= tpl.shape) or not allowed[tuple(zyx)]:
            return False
        return all(np.linalg.norm(p - np.asarray(o.centre_mm)) > o.diameter_mm / 2 + 4.0 for o in avoid)

    for _ in range(20):
        p = tpl.index_to_lps(cand[rng.integers(len(cand))])
        if ok(p):
            break
    else:
        return None
    v = rng.standard_normal(3)
    v /= np.linalg.norm(v)
    pts = [p]
    for _ in range(steps):
        for _try in range(12):
            w = v + 0.35 * rng.standard_normal(3)
            w /= np.linalg.norm(w)
            if ok(pts[-1] + w):
                v = w
                pts.append(pts[-1] + w)
                break
        else:
            break
    return np.asarray(pts) if len(pts) >= 8 else None


def _draw_lookalikes(tpl: Template, sites: _Sites, rng: np.random.Generator, lesions: list[Lesion]) -> list[LookAlike]:
    out: list[LookAlike] = []
    surface = tpl.brain & (sites.depth <= 3.0) & (sites.depth >= 0.5)
    deep = tpl.brain & (sites.depth >= 14.0)
    for allowed, n, (r0, r1) in ((surface, int(rng.integers(6, 12)), (0.7, 1.2)),
                                 (deep, int(rng.integers(2, 4)), (0.8, 1.3))):
        for _ in range(n):
            pts = _walk(tpl, rng, allowed, lesions, int(rng.integers(20, 60)))
            if pts is not None:
                out.append(LookAlike("vessel", tuple(tuple(round(float(c), 3) for c in p) for p in pts),
                                     round(float(rng.uniform(r0, r1)), 3)))
    # Dural enhancement: patches of the shell 0.5–2.5 mm outside the brain.
    shell = (sites.depth <= -0.5 * tpl.spacing) & (sites.depth >= -2.5 - 0.5 * tpl.spacing)
    shell_idx = np.argwhere(shell & (sites.depth > -2.5 - 0.5 * tpl.spacing))
    n_dural, tries = int(rng.integers(1, 4)), 0
    while n_dural and tries < 50:
        tries += 1
        c = tpl.index_to_lps(shell_idx[rng.integers(len(shell_idx))])
        if c[2] < -20:  # keep to the convexity (skull base enhancement is another story)
            continue
        n_dural -= 1
        rad = float(rng.uniform(12.0, 30.0))
        near = shell_idx[np.linalg.norm(tpl.index_to_lps(shell_idx) - c, axis=1) < rad]
        pick = near[rng.choice(len(near), size=min(12, len(near)), replace=False)]
        out.append(LookAlike("dural enhancement",
                             tuple(tuple(round(float(v), 3) for v in p) for p in [c, *tpl.index_to_lps(pick)]),
                             round(rad, 3)))
    return out


def _lookalike_fraction(tpl: Template, sites: _Sites, la: LookAlike) -> tuple[tuple[slice, ...], np.ndarray]:
    """Soft fraction of one look-alike in a box of the template grid."""
    sp = tpl.spacing
    d_inv = np.linalg.inv(np.asarray(tpl.direction).reshape(3, 3))
    pts = np.asarray(la.points_mm)
    if la.kind == "vessel":
        zyx = np.rint((d_inv @ (pts - np.asarray(tpl.origin)).T).T / sp)[:, ::-1].astype(int)
        pad = int(math.ceil((la.size_mm + 2) / sp))
        lo, hi = np.maximum(zyx.min(0) - pad, 0), np.minimum(zyx.max(0) + pad + 1, tpl.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        seed = np.ones(tuple(hi - lo), dtype=bool)
        seed[tuple((zyx - lo).T)] = False
        dist = ndimage.distance_transform_edt(seed, sampling=sp)
        return box, np.clip(la.size_mm + 0.5 * sp - dist, 0.0, 1.0).astype(np.float32)
    c = pts[0]
    pad = int(math.ceil((la.size_mm + 3) / sp))
    ci = np.rint((d_inv @ (c - np.asarray(tpl.origin)) / sp)[::-1]).astype(int)
    box = tuple(slice(max(0, a - pad), min(n, a + pad + 1)) for a, n in zip(ci, tpl.shape))
    idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), axis=-1)
    near = np.linalg.norm(tpl.index_to_lps(idx) - c, axis=-1) < la.size_mm
    dep = sites.depth[box]
    band = near & (dep <= -0.5 * sp) & (dep >= -2.5 - 0.5 * sp)
    return box, np.clip(ndimage.gaussian_filter(band.astype(np.float32), 0.5), 0, 1) * band


# --------------------------------------------------------------------------
# Follow-up
# --------------------------------------------------------------------------

def _status(factor: float) -> str:
    if factor <= 0:
        return "resolved"
    if factor >= 1.2:
        return "enlarging"
    if factor <= 0.7:
        return "shrinking"
    return "stable"


def _follow_up(tpl: Template, sites: _Sites, base: list[Lesion], rng: np.random.Generator,
               changes: dict[int, float] | None, new_lesions: int | None) -> list[Lesion]:
    """Lesions at a later exam: diameters × factor (0 = resolved), plus new ones.

    Drawn from the seed when *changes* is None: ~30 % enlarge (×1.35–1.8),
    ~35 % stay (×0.9–1.1), ~25 % shrink (×0.35–0.7), ~10 % resolve, and
    0–2 new lesions (2–12 mm) appear. Growth is capped so lesions never touch.
    """
    ids = {les.id for les in base}
    if changes is not None:
        unknown = set(map(int, changes)) - ids
        if unknown:
            raise ValueError(f"changes: no baseline lesion with id {sorted(unknown)}")
    out: list[Lesion] = []
    for les in base:
        if changes is not None:
            f = float(changes.get(les.id, 1.0))
        else:
            u = rng.random()
            f = (rng.uniform(1.35, 1.8) if u < 0.3 else rng.uniform(0.9, 1.1) if u < 0.65
                 else rng.uniform(0.35, 0.7) if u < 0.9 else 0.0)
        if f < 0:
            raise ValueError("changes: a factor must be >= 0")
        d = les.diameter_mm * f
        if f > 0:  # cap growth: stay ≥ 2 mm away from every other baseline lesion
            room = min((np.linalg.norm(np.asarray(les.centre_mm) - np.asarray(o.centre_mm)) - o.diameter_mm / 2 - 2.0
                        for o in base if o.id != les.id), default=1e9)
            d = max(1.5, min(d, 2.0 * room, 40.0))
            f = d / les.diameter_mm
        out.append(Lesion(les.id, les.centre_mm, round(d, 3) if f > 0 else 0.0, les.kind, les.site, les.hemisphere,
                          les.ratios, les.rotation, les.shape, les.necrotic_fraction, les.edema_factor,
                          _status(f), les.diameter_mm))
    n_new = int(rng.integers(0, 3)) if new_lesions is None and changes is None else int(new_lesions or 0)
    if n_new:
        grown = [les for les in out if les.diameter_mm > 0] + [les for les in base]
        new = _draw_lesions(tpl, sites, rng, n_new, placed=grown, first_id=max(ids, default=0) + 1,
                             max_d=12.0)  # new lesions are found small
        out += [Lesion(**{**n.__dict__, "status": "new"}) for n in new]
    return out


# --------------------------------------------------------------------------
# Template-space case (shared with training)
# --------------------------------------------------------------------------

@dataclass
class MetCase:
    """Ideal (noise-free) T1c and FLAIR with the lesion label map on a template grid."""

    template: Template
    images: dict[str, np.ndarray]  # "t1c", "flair" -> float32 (z, y, x)
    labels: np.ndarray  # uint16 (z, y, x), value = lesion id
    lesions: list[Lesion]  # at this exam (resolved ones included, diameter 0)
    lookalikes: list[LookAlike]
    seed: int
    edema_ml: dict[int, float] = field(default_factory=dict)


def synthesize_metastasis_case(seed: int, *, spacing: float = 1.0, anatomy: str = "colin27",
                               lesions: int | None = None, followup_days: int = 0,
                               changes: dict[int, float] | None = None,
                               new_lesions: int | None = None) -> MetCase:
    """Anatomy + metastases + look-alikes in template space (no noise, bias or scanner geometry).

    The study writer (1 mm) and a model's training (2 mm) share this path.
    ``lesions``: count (0–15; default drawn, small counts likelier).
    ``followup_days`` > 0: a later exam of the same patient; lesions change
    by ``changes`` ({id: diameter factor}, 0 = resolved; others stay) or as
    drawn from the seed and ``followup_days``; ``new_lesions`` new ones.
    """
    if lesions is not None and not (isinstance(lesions, int) and 0 <= lesions <= MAX_LESIONS):
        raise ValueError(f"lesions must be an int in [0, {MAX_LESIONS}]")
    tpl = load_template(spacing, anatomy)
    sites = _sites(spacing, anatomy)
    rng = np.random.default_rng([int(seed), 0x3E75])
    count = _draw_count(rng) if lesions is None else lesions
    base = _draw_lesions(tpl, sites, rng, count)
    look = _draw_lookalikes(tpl, sites, np.random.default_rng([int(seed), 0x3E76]), base)
    jit = np.random.default_rng([int(seed), 0x3E77])
    jitter = {k: float(jit.uniform(0.9, 1.1)) for k in ("enh", "nec", "edema")}
    if followup_days or changes is not None or new_lesions:
        les_now = _follow_up(tpl, sites, base, np.random.default_rng([int(seed), int(followup_days), 0x3E78]),
                             changes, new_lesions)
    else:
        les_now = base
    images: dict[str, np.ndarray] = {}
    for contrast, v in _INTENSITY.items():
        images[contrast] = (tpl.p_wm * v["wm"] + tpl.p_gm * v["gm"] + tpl.p_csf * v["csf"]
                            + tpl.nonbrain * v["nonbrain"]).astype(np.float32)
    for la in look:  # enhancing on T1c only (vessels are flow voids on FLAIR, dura is faint)
        box, f = _lookalike_fraction(tpl, sites, la)
        key = "vessel" if la.kind == "vessel" else "dura"
        img = images["t1c"]
        img[box] = img[box] * (1 - f) + f * _INTENSITY["t1c"][key]
    labels = np.zeros(tpl.shape, dtype=np.uint16)
    edema_ml: dict[int, float] = {}
    painted = [(les, p) for les in les_now if (p := _render(tpl, les)) is not None]
    # Two passes: every lesion's oedema first, then every lesion's enhancing and necrotic tissue.
    # Oedema reaches ~2.6 radii and lesions are only 3 mm apart, so painting lesion by lesion let a
    # later lesion's oedema paint over an earlier lesion: labelled, but invisible on the image.
    for les, p in painted:
        edema_ml[les.id] = round(float((p.f_edema > 0.5).sum()) * tpl.spacing**3 / 1000.0, 4)
        for contrast, v in _INTENSITY.items():
            img = images[contrast]
            base_img = img[p.box]
            edema_t = 0.75 * v["edema"] * jitter["edema"] + 0.25 * base_img
            img[p.box] = base_img * (1 - p.f_edema) + p.f_edema * edema_t
    for les, p in painted:
        lab = labels[p.box]
        lab[p.inside] = les.id
        f_les = np.clip(p.f_enh + p.f_nec, 0, 1)
        for contrast, v in _INTENSITY.items():
            img = images[contrast]
            base_img = img[p.box]
            img[p.box] = (base_img * (1 - f_les) + p.f_enh * v["enh"] * jitter["enh"]
                          + p.f_nec * v["nec"] * jitter["nec"])
    return MetCase(tpl, images, labels, les_now, look, int(seed), edema_ml)


# --------------------------------------------------------------------------
# Study
# --------------------------------------------------------------------------

_SIEMENS_3D = ("GR\\IR", "SK\\SP\\MP", "IR", "3D", "*tfl3d1_16ns", 1, ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"))
_GE_3D = ("GR\\IR", "SS\\SK", "FAST_GEMS\\EDR_GEMS\\FILTERED_GEMS\\ACC_GEMS", "3D", "efgre3d", 1,
          ("ORIGINAL", "PRIMARY", "OTHER"))


def _protocols(vendor: str, t1c_axial: bool, flair_3d: bool) -> dict[str, _Protocol]:
    if vendor == "siemens":
        ori = "tra" if t1c_axial else "sag"
        t1c = _Protocol(f"t1_mprage_{ori}_p2_iso POST", f"t1_mprage_{ori}_p2_iso", 2300, 2.98, 900, 9, *_SIEMENS_3D)
        flair = (_Protocol("t2_space_dark-fluid_sag_p2_iso", "t2_space_dark-fluid_sag_p2_iso", 5000, 387, 1800, 120,
                           "SE\\IR", "SK\\SP\\MP", "IR", "3D", "*spcir3d1_240ns", 240,
                           ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")) if flair_3d else
                 _Protocol("t2_tirm_tra_dark-fluid", "t2_tirm_tra_dark-fluid", 9000, 81, 2500, 150, "SE\\IR",
                           "SK\\SP\\MP\\OSP", "IR", "2D", "*tir2d1_16", 16, ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")))
    else:
        ori = "Ax" if t1c_axial else "Sag"
        t1c = _Protocol(f"{ori} T1 BRAVO +C", "BRAIN METS", 8.2, 3.2, 450, 12, *_GE_3D)
        flair = (_Protocol("Sag CUBE FLAIR", "BRAIN METS", 6000, 120, 1800, 90, "SE\\IR", "SK\\MP",
                           "FAST_GEMS\\IR_GEMS", "3D", "Cube", 180, ("ORIGINAL", "PRIMARY", "OTHER")) if flair_3d else
                 _Protocol("Ax T2 FLAIR", "BRAIN METS", 9500, 120, 2400, 90, "SE\\IR", "SK\\MP", "FAST_GEMS\\IR_GEMS",
                           "2D", "fse-ir", 24, ("ORIGINAL", "PRIMARY", "AXIAL")))
    return {"t1c": t1c, "flair": flair}


_SERIES_NUMBER = {"siemens": {"flair": 3, "t1c": 9}, "ge": {"flair": 4, "t1c": 10}}


def _plan(rng: np.random.Generator, c_p: np.ndarray, scale: float, t1c_axial: bool,
          flair_3d: bool, flair_mm: float) -> dict[str, SeriesGeometry]:
    """T1c: 3D ~1 mm (sagittal or axial); FLAIR: 2D axial thick slices, or 3D sagittal ~1 mm."""
    sag_r, sag_c = _unit(np.array([0.0, 1.0, 0.0])), _unit(np.array([0.0, 0.0, -1.0]))
    ax_r, ax_c = _unit(np.array([1.0, 0.0, 0.0])), _unit(np.array([0.0, 1.0, 0.0]))
    geoms: dict[str, SeriesGeometry] = {}
    for label, axial in (("t1c", t1c_axial), ("flair", False)):
        if label == "flair" and not flair_3d:
            continue
        n_sl, mat, px = [(160, 224, 1.0), (176, 240, 1.0), (176, 256, 1.0), (192, 256, 0.9375)][rng.integers(0, 4)]
        n3 = max(8, int(round(n_sl * scale)))
        m3 = max(16, int(round(mat * scale)))
        px3 = round(px * mat / m3, 6)
        sl3 = round(1.0 * n_sl / n3, 4)
        centre = c_p + rng.uniform(-4, 4, 3) + np.array([0.0, 0.0, 12.0 if not axial else 5.0])
        r, c = (ax_r, ax_c) if axial else (sag_r, sag_c)
        geoms[label] = _grid(centre, r, c, px3, m3, m3, n3, sl3, sl3)
    if not flair_3d:
        ang = math.radians(rng.uniform(-10.0, 10.0))
        row = _unit(np.array([1.0, 0.0, 0.0]))
        col = _unit(np.array([0.0, math.cos(ang), math.sin(ang)]))
        mat2 = int(rng.choice([256, 320, 384]))
        fov = float(rng.choice([220.0, 230.0, 240.0]))
        m2 = max(16, int(round(mat2 * scale)))
        gap = float(rng.choice([0.0, 0.5, 1.0]))
        spacing = flair_mm + gap
        n2 = int(math.ceil(150.0 / spacing)) + int(rng.integers(0, 3))
        centre = c_p + rng.uniform(-5, 5, 3) + np.array([0.0, 0.0, 8.0])
        geoms["flair"] = _grid(centre, row, col, round(fov / m2, 6), m2, m2, n2, spacing, flair_mm)
    return geoms


def _longest(points: np.ndarray) -> float:
    if len(points) < 2:
        return 0.0
    if len(points) > 40:
        try:
            points = points[ConvexHull(points).vertices]
        except Exception:  # noqa: BLE001 - coplanar points (one slice): all points then
            pass
    return float(pdist(points).max())


def _measure(labels: np.ndarray, geom: SeriesGeometry, ids: list[int]) -> dict[int, dict]:
    """Per lesion id on a series-grid label map: voxels, volume, centroid (LPS), diameters."""
    v_vox = geom.pixel * geom.pixel * geom.slice_spacing / 1000.0
    m = np.column_stack([np.asarray(geom.row_dir) * geom.pixel, np.asarray(geom.col_dir) * geom.pixel,
                         geom.normal * geom.slice_spacing])
    out: dict[int, dict] = {}
    objs = ndimage.find_objects(labels.astype(np.int64), max_label=max(ids, default=0))
    for i in ids:
        sl = objs[i - 1] if i - 1 < len(objs) else None
        if sl is None:
            out[i] = {"voxels": 0}
            continue
        kji = np.argwhere(labels[sl] == i) + np.array([s.start for s in sl])
        pts = np.asarray(geom.origin) + kji[:, ::-1] @ m.T
        d3 = _longest(pts) + geom.pixel
        zb = np.rint(pts[:, 2] / min(geom.pixel, geom.slice_spacing))
        d_ax = max(_longest(pts[zb == z][:, :2]) for z in np.unique(zb)) + geom.pixel
        out[i] = {"voxels": int(len(kji)), "volume_ml": round(len(kji) * v_vox, 5),
                  "centroid_lps_mm": [round(float(x), 3) for x in pts.mean(axis=0)],
                  "longest_diameter_mm": round(d3, 2), "longest_axial_diameter_mm": round(d_ax, 2)}
    return out


def _exam(tpl: Template, seed: int, days: int, scale: float, t1c_axial: bool, flair_3d: bool,
          flair_mm: float) -> tuple:
    """One exam's head position and series grids (a pure function of seed and day)."""
    rng = np.random.default_rng([int(seed), int(days), 0x3E71])
    c_t = tpl.index_to_lps(np.argwhere(tpl.brain).mean(axis=0))
    rot = _random_rotation(rng, 2.0, 10.0)
    c_p = np.array([rng.uniform(-6, 6), rng.uniform(-30, 5), rng.uniform(-35, 25)])
    to_template = sitk.AffineTransform(3)  # maps patient points to template points
    to_template.SetMatrix(tuple(rot.T.ravel()))
    to_template.SetTranslation(tuple(c_t - rot.T @ c_p))
    geometry = _plan(rng, c_p, scale, t1c_axial, flair_3d, flair_mm)
    return rng, rot, c_t, c_p, to_template, geometry


def _label_map(case: MetCase, geom: SeriesGeometry, to_template: sitk.Transform, rot: np.ndarray,
               c_t: np.ndarray, c_p: np.ndarray) -> np.ndarray:
    """Lesion ids on a series grid (nearest neighbour); a lesion too small to keep a voxel
    keeps the one at its centre."""
    lab = _resample(case.template.image(case.labels), geom, to_template, nearest=True).astype(np.uint16)
    ref = geom.reference()
    for les in case.lesions:
        if les.diameter_mm > 0 and not (lab == les.id).any():
            p = rot @ (np.asarray(les.centre_mm) - c_t) + c_p
            idx = ref.TransformPhysicalPointToIndex(tuple(float(v) for v in p))
            if all(0 <= i < n for i, n in zip(idx, geom.size)):
                lab[idx[2], idx[1], idx[0]] = les.id
    return lab


def _measured_status(now: dict, before: dict) -> str:
    """RANO-BM-like per lesion, on measured longest diameters: +20 % enlarging, -30 % shrinking."""
    if not now["voxels"]:
        return "resolved"
    ratio = now["longest_diameter_mm"] / max(before.get("longest_diameter_mm", 0.0), 1e-6)
    return "enlarging" if ratio >= 1.2 else "shrinking" if ratio <= 0.7 else "stable"


@dataclass(frozen=True)
class MetastasisStudy:
    """A written metastasis study and where its ground truth lies."""

    out_dir: Path
    study: GeneratedStudy
    geometry: dict[str, SeriesGeometry]
    labels_path: Path
    truth_path: Path
    truth: dict
    seed: int
    series_dirs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def generate_metastasis_study(
    out_dir: Path,
    *,
    seed: int = 0,
    lesions: int | None = None,
    anatomy: str = "colin27",
    vendor: str | None = None,
    flair_3d: bool | None = None,
    followup_days: int = 0,
    changes: dict[int, float] | None = None,
    new_lesions: int | None = None,
    scale: float = 1.0,
    flair_mm: float | None = None,
) -> MetastasisStudy:
    """Write a metastasis study (T1c + FLAIR) under ``out_dir/dicom`` and truth under ``out_dir/ground_truth``.

    ``seed`` fixes the patient (anatomy, lesions, look-alikes, vendor, age,
    UIDs); ``followup_days`` > 0 writes a later exam of that patient (same
    patient UIDs, new study, new head position) whose lesions changed by
    ``changes`` ({baseline id: diameter factor}, 0 = resolved) or as drawn;
    ``new_lesions`` new ones (default drawn 0–2 without ``changes``).
    A follow-up's truth gives each lesion's ``status`` as measured against
    the baseline exam's label map (longest diameter +20 % enlarging, −30 %
    shrinking, no voxel resolved; ``new``), its ``intended_change`` (from the
    drawn factor) and ``baseline_id`` (ids are stable; new ones continue the
    numbering). ``scale`` < 1 shrinks the matrices for fast tests.
    """
    t_start = time.perf_counter()
    if vendor not in (None, "siemens", "ge"):
        raise ValueError("vendor must be 'siemens', 'ge' or None")
    if not 0.1 <= scale <= 1.0:
        raise ValueError("scale must be in [0.1, 1]")
    if not isinstance(followup_days, int) or followup_days < 0:
        raise ValueError("followup_days must be a non-negative int")
    check_anatomy(anatomy)
    out_dir = Path(out_dir)
    dicom_dir, gt_dir = out_dir / "dicom", out_dir / "ground_truth"
    prng = np.random.default_rng([int(seed), 0x3E70])  # the patient and the scanner
    vendor = vendor or ("siemens" if prng.integers(0, 2) == 0 else "ge")
    field_strength = float(prng.choice([1.5, 3.0]))
    station_no = int(prng.integers(1, 9999))
    t1c_axial = bool(prng.random() < 0.35)
    flair_3d = bool(prng.random() < 0.4) if flair_3d is None else bool(flair_3d)
    flair_mm = flair_mm or float(prng.choice([4.0, 5.0]))
    base_dt = _dt.datetime(2024, 1, 1, 7, 30) + _dt.timedelta(days=int(prng.integers(0, 365)),
                                                              minutes=int(prng.integers(0, 600)))
    sex = "F" if prng.integers(0, 2) else "M"
    age_years = int(prng.integers(35, 85))
    birth = _dt.date(base_dt.year - age_years, int(prng.integers(1, 13)), int(prng.integers(1, 29)))
    case = synthesize_metastasis_case(seed, anatomy=anatomy, lesions=lesions, followup_days=followup_days,
                                      changes=changes, new_lesions=new_lesions)
    tpl = case.template
    rng, rot, c_t, c_p, to_template, geometry = _exam(tpl, seed, followup_days, scale, t1c_axial, flair_3d, flair_mm)
    tilt_deg = math.degrees(math.acos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))

    def to_patient(t_mm: np.ndarray) -> list[float]:
        return [round(float(v), 3) for v in rot @ (np.asarray(t_mm) - c_t) + c_p]

    protocols = _protocols(vendor, t1c_axial, flair_3d)
    numbers = _SERIES_NUMBER[vendor]
    vend = _VENDORS[vendor]
    study_dt = base_dt + _dt.timedelta(days=followup_days)
    patient_name = f"SYNTH^METS{seed}"
    patient_id = f"RNMET{seed:06d}"[:64]
    accession = f"6{(seed * 7 + followup_days) % 10**8:08d}"
    key = f"radnode-synth-metastasis|{seed}|{anatomy}|{vendor}|{scale}|{lesions}|{int(flair_3d)}|{flair_mm}"
    exam_key = f"{key}|{followup_days}|{sorted((changes or {}).items())}|{new_lesions}"

    def uid(*parts: object) -> str:
        return derive_uid("radnode.synth.metastasis", exam_key, *map(str, parts))

    study_uid = uid("study")
    for_uid = uid("frame-of-reference")
    written: list[GeneratedSeries] = []
    series_dirs: dict[str, Path] = {}
    for label in ("flair", "t1c"):
        geom = geometry[label]
        vol = _series_pixels(tpl.image(case.images[label]), geom, to_template)
        vol *= rng.uniform(0.85, 1.15) * _bias(vol.shape, rng, 0.18)
        vol = _rician(vol, rng, float(rng.uniform(0.015, 0.035)) * _INTENSITY[label]["wm"])
        pixels = np.clip(np.rint(vol), 0, 4095).astype(np.uint16)
        number = numbers[label]
        series_uid = uid("series", label)
        series_dir = dicom_dir / str(number)
        series_dir.mkdir(parents=True, exist_ok=True)
        files, sops = _write_series(
            pixels, geom, series_dir, label=label, proto=protocols[label], vend=vend, vendor=vendor,
            field_strength=field_strength, station_no=station_no, patient_name=patient_name,
            patient_id=patient_id, birth=birth, sex=sex, age_years=age_years, accession=accession,
            study_uid=study_uid, series_uid=series_uid, for_uid=for_uid, study_dt=study_dt,
            number=number, uid=uid)
        series_dirs[label] = series_dir
        written.append(GeneratedSeries(series_uid, number, label, protocols[label].description,
                                       len(files), files, sops))

    g = geometry["t1c"]
    lab = _label_map(case, g, to_template, rot, c_t, c_p)
    ref = g.reference()
    live = [les for les in case.lesions if les.diameter_mm > 0]
    gt_dir.mkdir(parents=True, exist_ok=True)
    labels_path = gt_dir / "labels.nii.gz"
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(labels_path), useCompression=True)

    meas = _measure(lab, g, [les.id for les in case.lesions])
    followup = bool(followup_days or changes is not None or new_lesions)
    base_meas: dict[int, dict] = {}
    if followup:  # the baseline exam's measurements, on its own grid and head position
        b_case = synthesize_metastasis_case(seed, anatomy=anatomy, lesions=lesions)
        _, b_rot, b_ct, b_cp, b_to, b_geom = _exam(tpl, seed, 0, scale, t1c_axial, flair_3d, flair_mm)
        b_lab = _label_map(b_case, b_geom["t1c"], b_to, b_rot, b_ct, b_cp)
        base_meas = _measure(b_lab, b_geom["t1c"], [les.id for les in b_case.lesions])
    les_truth = []
    for les in case.lesions:
        m = meas[les.id]
        entry = {
            "id": les.id, "kind": les.kind, "site": les.site, "hemisphere": les.hemisphere,
            "nominal_diameter_mm": les.diameter_mm,
            "centroid_lps_mm": m.get("centroid_lps_mm"),
            "centroid_template_mm": [round(v, 3) for v in les.centre_mm],
            "longest_diameter_mm": m.get("longest_diameter_mm", 0.0),
            "longest_axial_diameter_mm": m.get("longest_axial_diameter_mm", 0.0),
            "volume_ml": m.get("volume_ml", 0.0), "voxels": m["voxels"],
            "edema_ml": case.edema_ml.get(les.id, 0.0),
        }
        if followup:
            new = les.status == "new"
            entry["status"] = "new" if new else _measured_status(m, base_meas[les.id])
            entry["intended_change"] = les.status
            entry["baseline_id"] = None if new else les.id
            entry["baseline_nominal_diameter_mm"] = les.baseline_diameter_mm
            if not new:
                entry["baseline_longest_diameter_mm"] = base_meas[les.id].get("longest_diameter_mm", 0.0)
                entry["baseline_volume_ml"] = base_meas[les.id].get("volume_ml", 0.0)
        les_truth.append(entry)
    look_truth = [{"kind": la.kind, "is_lesion": False, "size_mm": la.size_mm,
                   "points_lps_mm": [to_patient(p) for p in la.points_mm]} for la in case.lookalikes]
    truth = {
        "seed": int(seed), "anatomy": anatomy, "vendor": vendor, "followup_days": followup_days,
        "study_date": study_dt.strftime("%Y%m%d"),
        "lesion_count": len(live),
        "lesions": les_truth,
        "lookalikes": look_truth,
        "label_map": "labels.nii.gz", "label_map_series_number": numbers["t1c"],
        "label_values": "0 background; n = lesion id n",
        "voxel_volume_ml": g.pixel * g.pixel * g.slice_spacing / 1000.0,
        "measurement": "volume = voxels x voxel volume; diameters = longest voxel-centre distance + one pixel "
                       "(3-D, and within one axial plane of the patient)",
        "head_tilt_deg": round(tilt_deg, 3),
        "template_to_patient": {
            "template": f"{anatomy} (radnode.synth.glioma), LPS",
            "rotation": [[round(float(x), 8) for x in row] for row in rot],
            "template_centre_lps_mm": [round(float(x), 4) for x in c_t],
            "patient_centre_lps_mm": [round(float(x), 4) for x in c_p],
            "formula": "p = R @ (t - template_centre) + patient_centre",
        },
        "series": {lab_: {"series_number": numbers[lab_], "description": protocols[lab_].description,
                          "size": list(gg.size), "pixel_mm": gg.pixel, "slice_spacing_mm": gg.slice_spacing,
                          "thickness_mm": gg.thickness} for lab_, gg in geometry.items()},
    }
    truth_path = gt_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    study = GeneratedStudy(dicom_dir, study_uid, accession, patient_id, patient_name, vendor, for_uid, written)
    seconds = time.perf_counter() - t_start
    log.info("synth.metastasis.written", out_dir=str(out_dir), seed=seed, vendor=vendor, lesions=len(live),
             followup_days=followup_days, instances=study.instance_count, seconds=round(seconds, 2))
    return MetastasisStudy(out_dir, study, geometry, labels_path, truth_path, truth, int(seed), series_dirs, seconds)
