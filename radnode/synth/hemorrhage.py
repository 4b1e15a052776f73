"""Synthetic non-contrast head CTs with intracranial haemorrhage and ground truth.

Why this exists: a haemorrhage detector (triage: "is there a bleed, which
kind, on which slices, how much") needs input whose right answer is known,
and no real patient CT can ship with radnode. A study made here looks like
what a CT scanner sends: 512×512 axial slices 2.5–5 mm thick, a tilted
gantry, a head turned by a few degrees, GE- or Siemens-like headers, HU with
beam hardening (cupping, streaks near the skull base) and quantum noise.

The anatomy comes from the heads of :mod:`radnode.synth.glioma` (Colin27,
MNI152 and their elastic warps), so a model can be trained on some heads and
checked on one it never saw: tissue fractions become HU, the skull is a shell
around the intracranial cavity with inner and outer tables and diploë, the
scalp has skin, fat and muscle. Bleeds of the five subtypes are drawn with
their typical shape, place and density (epidural lens bounded by sutures,
subdural crescent along the convexity or the falx, intraparenchymal clot with
an oedema rim, intraventricular blood layering in the occipital horns,
subarachnoid blood in sulci and basal cisterns), alone, mixed, or none.

Two entry points share one bleed-drawing code path:
:func:`synthesize_ct_case` (template space, no DICOM: what training slices)
and :func:`generate_hemorrhage_study` (DICOM series plus a voxel label map in
the series geometry, per-slice labels and volumes in ``truth.json``).

Everything is a pure function of the seed (pixels, headers, UIDs).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
import structlog
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

from radnode.model.hemorrhage import SUBTYPES
from radnode.synth.glioma import (
    SeriesGeometry,
    Template,
    _grid,
    _random_rotation,
    _smooth_noise,
    _unit,
    check_anatomy,
    load_template,
)
from radnode.synth.mr_study import GeneratedSeries, GeneratedStudy, _ds
from radnode.uids import derive_uid

log = structlog.get_logger(__name__)

__all__ = [
    "LABELS",
    "SUBTYPES",
    "TISSUES",
    "CTCase",
    "HemorrhageStudy",
    "check_subtypes",
    "generate_hemorrhage_study",
    "synthesize_ct_case",
]

#: Voxel label value of each subtype (0: no bleed): its position in SUBTYPES + 1.
LABELS: dict[int, str] = {i + 1: name for i, name in enumerate(SUBTYPES)}
_LABEL_OF: dict[str, int] = {name: value for value, name in LABELS.items()}

#: Tissue classes of the anatomy map (``CTCase.tissue``, ``ground_truth/tissues.nii.gz``).
TISSUES: dict[int, str] = {
    0: "air", 1: "soft_tissue", 2: "fat", 3: "cortical_bone", 4: "diploe", 5: "csf",
    6: "grey_matter", 7: "white_matter", 8: "ventricle", 9: "oedema",
}
_T = {name: value for value, name in TISSUES.items()}

# Nominal HU of the anatomy (noise-free; partial volume mixes them).
_HU = dict(air=-1000.0, skin=45.0, fat=-95.0, muscle=42.0, cortical=1550.0, diploe=500.0, csf=7.0,
           ventricle=5.0, gm=39.0, wm=28.0, falx=55.0)

# Density of fresh blood per subtype (HU range the mean is drawn from).
_BLOOD_HU: dict[str, tuple[float, float]] = {
    "epidural": (58.0, 75.0),
    "subdural": (50.0, 66.0),
    "intraparenchymal": (65.0, 82.0),
    "intraventricular": (52.0, 68.0),
    "subarachnoid": (52.0, 64.0),  # thin: partial volume with brain brings it to 40–60
}

# Order in which bleeds are painted (a later one wins where two overlap).
_PAINT_ORDER = ("subarachnoid", "intraventricular", "intraparenchymal", "subdural", "epidural")

# Relative frequency of each subtype when the subtypes are drawn from the seed.
_SUBTYPE_WEIGHTS = np.array([0.12, 0.26, 0.24, 0.14, 0.24])


def check_subtypes(subtypes: Iterable[str] | None) -> frozenset[str] | None:
    """*subtypes* as a frozenset (None stays None); ValueError naming the argument otherwise."""
    if subtypes is None:
        return None
    if isinstance(subtypes, str):
        subtypes = [subtypes]
    out = frozenset(subtypes)
    unknown = sorted(s for s in out if s not in _LABEL_OF)
    if unknown:
        raise ValueError(f"subtypes: unknown subtype(s) {unknown}; known: {list(SUBTYPES)}")
    if not out:
        raise ValueError("subtypes: empty; pass None (drawn from the seed) or hemorrhage=False for none")
    return out


# --------------------------------------------------------------------------
# Anatomy: tissue fractions → HU, skull, scalp (cached per head and spacing)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Anatomy:
    """A CT head on a template grid; arrays are (z, y, x).

    ``x``, ``y``, ``z`` are RAS (MNI-like) millimetres, broadcastable to the
    grid: the templates sit in MNI space, so sites (basal ganglia, sutures,
    cisterns) are placed with MNI coordinates and then snapped to the masks.
    """

    tpl: Template
    hu: np.ndarray  # float32 noise-free HU
    tissue: np.ndarray  # uint8 TISSUES
    cavity: np.ndarray  # bool, intracranial space
    depth: np.ndarray  # float32 mm from the inner table (inside the cavity; 0 outside)
    ventricles: np.ndarray  # bool
    space: np.ndarray  # float32 subarachnoid CSF fraction (cavity, outside the ventricles)
    midline: float  # RAS x of the falx
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def spacing(self) -> float:
        return self.tpl.spacing

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.tpl.shape


def _ras_axes(tpl: Template) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(tpl.direction, dtype=np.float64).reshape(3, 3)
    if np.abs(d - np.diag(np.diag(d))).max() > 1e-6:
        raise ValueError("anatomy: template direction must be diagonal")
    nz, ny, nx = tpl.shape
    sp = tpl.spacing
    x_lps = tpl.origin[0] + d[0, 0] * sp * np.arange(nx)
    y_lps = tpl.origin[1] + d[1, 1] * sp * np.arange(ny)
    z = tpl.origin[2] + d[2, 2] * sp * np.arange(nz)
    return ((-x_lps)[None, None, :].astype(np.float32), (-y_lps)[None, :, None].astype(np.float32),
            z[:, None, None].astype(np.float32))


def _signed_distance(mask: np.ndarray, spacing: float) -> np.ndarray:
    """Signed distance in mm to the surface of *mask*, positive outside."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing((spacing,) * 3)
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))


def _fill_in_plane(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (a pocket of the brain mask open only downwards is cistern, not bone)."""
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(mask, structure=plane)


def _textures(shape: tuple[int, int, int], sp: float) -> list[np.ndarray]:
    """Four smooth unit-noise fields (σ 3 mm): one filtered field, rolled far apart (cheap, locally independent)."""
    base = _smooth_noise(np.random.default_rng(0xC7A0), shape, max(1.0, 3.0 / sp))
    shifts = ((0, 0, 0), (37, 0, 0), (0, 53, 0), (0, 0, 61))
    return [np.roll(base, tuple(int(v / sp) for v in s), axis=(0, 1, 2)) if any(s) else base for s in shifts]


@functools.lru_cache(maxsize=16)
def _ct_anatomy(spacing: float, anatomy: str) -> _Anatomy:
    """Build the CT head of *anatomy* at *spacing* (1 or 2 mm); deterministic, cached."""
    tpl = load_template(spacing, anatomy)
    sp = tpl.spacing
    x, y, z = _ras_axes(tpl)
    tex = _textures(tpl.shape, sp)
    brain = tpl.brain

    # Intracranial cavity: the brain closed by 6 mm (cisterns, notches of the brain mask) plus 1.5–4 mm of
    # extra-axial CSF; the inner table follows the brain.
    closing = 6.0
    grown = _signed_distance(brain, sp) <= closing + np.clip(2.7 + 0.7 * tex[0], 1.5, 4.0)
    cavity = _fill_in_plane(brain | (_signed_distance(grown, sp) <= -closing))
    sd = _signed_distance(cavity, sp)  # > 0 outside the cavity
    depth = np.where(cavity, -sd, 0.0).astype(np.float32)

    # Skull: a shell outside the cavity, 5–8 mm, a little thicker and denser at the skull base.
    floor = np.clip(-np.gradient(sd, sp, axis=0) - 0.25, 0.0, 1.0)  # outward normal pointing down
    thick = np.clip(6.3 + 1.1 * tex[1] + 3.0 * floor, 3.0, 11.0)
    skull = (sd > 0) & (sd <= thick)
    t_in = np.clip(1.6 + 0.3 * tex[2], 1.0, 2.2)
    t_out = np.clip(1.9 + 0.3 * tex[3], 1.2, 2.6)
    cortical = skull & ((sd <= t_in) | (sd > thick - t_out) | (floor > 0.6))
    diploe = skull & ~cortical

    # Head outline: the template's own scalp (Colin27: a real head and face) and at least 4.5 mm over the
    # skull; enclosed spaces are tissue, the airway open to the outside stays air.
    scalp_signal = tpl.nonbrain
    head = ndimage.binary_fill_holes((scalp_signal > 0.02) | (sd <= thick + 4.5 + 0.8 * tex[0]))
    skin_depth = -_signed_distance(head, sp)

    hu = np.full(tpl.shape, _HU["air"], dtype=np.float32)
    tissue = np.zeros(tpl.shape, dtype=np.uint8)
    soft = head & ~skull & ~cavity
    fat_band = ((skin_depth > 1.4) & (skin_depth <= 1.4 + np.clip(1.3 + 0.8 * tex[2], 0.3, 2.5))
                & (tex[1] > -0.4))
    bright = scalp_signal > 1.05  # Colin27: fat is bright on T1 (orbits, neck, scalp)
    fat = soft & (fat_band | bright)
    hu[soft] = _HU["muscle"] + 3.0 * tex[3][soft]
    hu[soft & (skin_depth <= 1.4)] = _HU["skin"]
    hu[fat] = _HU["fat"] + 8.0 * tex[1][fat]
    tissue[soft] = _T["soft_tissue"]
    tissue[fat] = _T["fat"]
    dense = np.clip(1550.0 + 220.0 * tex[2] + 250.0 * floor, 1150.0, 1900.0)
    hu[cortical] = dense[cortical]
    hu[diploe] = np.clip(500.0 + 110.0 * tex[0], 300.0, 700.0)[diploe]
    tissue[cortical] = _T["cortical_bone"]
    tissue[diploe] = _T["diploe"]

    # Brain: tissue fractions → HU; the rest of the cavity is CSF.
    wm, gm, csf = tpl.p_wm, tpl.p_gm, tpl.p_csf
    total = wm + gm + csf
    in_brain = cavity & (total > 0.05) & brain
    mix = (_HU["wm"] * wm + _HU["gm"] * gm + _HU["csf"] * csf) / np.maximum(total, 1e-3)
    hu[cavity] = _HU["csf"]
    hu[in_brain] = (mix + 0.8 * tex[3])[in_brain]
    tissue[cavity] = _T["csf"]
    tissue[in_brain & (gm > csf) & (gm >= wm)] = _T["grey_matter"]
    tissue[in_brain & (wm > csf) & (wm > gm)] = _T["white_matter"]

    # Ventricles: deep CSF (≥ 12 mm inside the inner table), components of at least 0.3 mL.
    deep = in_brain & (csf > 0.5) & (depth >= 12.0)
    lab, n = ndimage.label(deep)
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * sp**3 / 1000.0
        keep = np.flatnonzero(sizes >= 0.3) + 1
        ventricles = np.isin(lab, keep)
    else:
        ventricles = np.zeros(tpl.shape, dtype=bool)
    hu[ventricles] = (_HU["ventricle"] * csf + _HU["gm"] * gm + _HU["wm"] * wm)[ventricles] / np.maximum(
        total[ventricles], 1e-3)
    tissue[ventricles] = _T["ventricle"]

    # Falx: a faint dense line at the midline above the corpus callosum.
    midline = float((x * brain).sum() / max(int(brain.sum()), 1) if brain.any() else 0.0)
    falx = np.clip(1.0 - np.abs(x - midline) / max(0.7, 0.6 * sp), 0.0, 1.0) * (z > 12.0) * (cavity & (csf > 0.5))
    hu = np.where(falx > 0, (1.0 - 0.6 * falx) * hu + 0.6 * falx * _HU["falx"], hu).astype(np.float32)

    space = np.where(cavity & ~ndimage.binary_dilation(ventricles), np.where(brain, csf, 1.0), 0.0).astype(np.float32)
    log.debug("synth.hemorrhage.anatomy", anatomy=anatomy, spacing=sp, ventricles_ml=round(
        float(ventricles.sum()) * sp**3 / 1000.0, 1))
    return _Anatomy(tpl, hu, tissue, cavity, depth, ventricles, space, midline, x, y, z)


# --------------------------------------------------------------------------
# Bleeds (one code path for template-space cases and DICOM studies)
# --------------------------------------------------------------------------

@dataclass
class _Bleed:
    """One bleed: soft fraction and blood HU inside a box of the template grid."""

    subtype: str
    box: tuple[slice, slice, slice]
    fraction: np.ndarray  # float32 in box, 0–1
    blood_hu: np.ndarray  # float32 in box
    info: dict
    oedema: np.ndarray | None = None  # bool in box
    oedema_hu: float = 0.0


def _box(anat: _Anatomy, centre_ras: np.ndarray, half_mm: float) -> tuple[slice, slice, slice]:
    """Index box (z, y, x) of ±half_mm around a RAS point, clipped to the grid."""
    out = []
    for axis, value in zip((anat.z.ravel(), anat.y.ravel(), anat.x.ravel()), centre_ras[::-1]):
        idx = np.flatnonzero(np.abs(axis - value) <= half_mm)
        if idx.size == 0:
            idx = np.array([int(np.argmin(np.abs(axis - value)))])
        out.append(slice(int(idx.min()), int(idx.max()) + 1))
    return tuple(out)  # type: ignore[return-value]


def _sub(arr: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """*arr* (full grid or broadcastable axis array) cut to *box*."""
    return arr[tuple(b if n > 1 else slice(None) for b, n in zip(box, arr.shape))]


def _ras_of(anat: _Anatomy, idx: np.ndarray) -> np.ndarray:
    """RAS mm of (n, 3) (z, y, x) indices."""
    idx = np.asarray(idx)
    return np.stack([anat.x.ravel()[idx[..., 2]], anat.y.ravel()[idx[..., 1]], anat.z.ravel()[idx[..., 0]]], axis=-1)


def _dist_to(anat: _Anatomy, box: tuple[slice, slice, slice], c: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) of every voxel in *box* to the RAS point *c*."""
    return np.sqrt((_sub(anat.x, box) - c[0]) ** 2 + (_sub(anat.y, box) - c[1]) ** 2
                   + (_sub(anat.z, box) - c[2]) ** 2)


def _surface_voxels(anat: _Anatomy) -> np.ndarray:
    """(n, 3) indices of the cavity's outermost layer (the inner table's inside)."""
    return np.argwhere(anat.cavity & (anat.depth <= anat.spacing))


def _bone_region(x: np.ndarray, y: np.ndarray, z: np.ndarray, midline: float) -> np.ndarray:
    """Skull bone over a RAS point: 1 frontal, 2 parietal, 3 temporal, 4 occipital; ×10 on the right (x > midline).

    The sutures are planes through MNI-like landmarks: coronal (bregma ~(0, 5, 75)
    to pterion ~(±50, 20, 5)), lambdoid (~y −78), squamosal (an arch over the
    temporal squama, top ~z 22). An epidural haematoma stays inside one region:
    the dura is fixed to the bone at the sutures.
    """
    x, y, z = np.broadcast_arrays(x, y, z)
    coronal = 5.0 + 0.21 * (75.0 - z)
    lambdoid = -78.0 + 0.05 * (55.0 - z)
    squamosal = 22.0 - ((y + 15.0) / 40.0) ** 2 * 14.0
    region = np.full(x.shape, 2, dtype=np.int8)
    region[(z < squamosal) & (y <= coronal) & (y >= lambdoid)] = 3
    region[y > coronal] = 1
    region[y < lambdoid] = 4
    return np.where(x > midline, region * 10, region).astype(np.int8)


_BONE_NAMES = {1: "frontal", 2: "parietal", 3: "temporal", 4: "occipital"}


def _bone_name(region: int) -> str:
    return f"{_BONE_NAMES[region % 10 or region // 10]}_{'right' if region >= 10 else 'left'}"


def _lens_fraction(thickness: np.ndarray, depth: np.ndarray, sp: float) -> np.ndarray:
    """Soft fraction of voxels closer to the inner table than *thickness* (partial volume at the edge)."""
    return np.clip((thickness - depth) / sp + 0.5, 0.0, 1.0).astype(np.float32)


def _blood(rng: np.random.Generator, subtype: str, shape: tuple[int, ...], sp: float) -> tuple[np.ndarray, float]:
    """Textured blood density (HU) of one bleed and its drawn mean."""
    lo, hi = _BLOOD_HU[subtype]
    mean = float(rng.uniform(lo, hi))
    return (mean + 2.5 * _smooth_noise(rng, shape, max(1.0, 2.5 / sp))).astype(np.float32), mean


def _epidural(anat: _Anatomy, rng: np.random.Generator) -> _Bleed:
    """Biconvex lens against the inner table, inside one skull bone (does not cross sutures)."""
    sp = anat.spacing
    surf = _surface_voxels(anat)
    ras = _ras_of(anat, surf)
    region = _bone_region(ras[:, 0], ras[:, 1], ras[:, 2], anat.midline)
    ok = ras[:, 2] > -15.0
    bone = int(rng.choice([3, 2, 1, 4], p=[0.45, 0.3, 0.15, 0.1])) * (10 if rng.random() < 0.5 else 1)
    cand = ok & (region == bone) & (np.abs(ras[:, 0] - anat.midline) > 12.0)
    other = ras[ok & (region != bone)]
    tree = cKDTree(other[:: max(1, len(other) // 40000)])
    margin, _ = tree.query(ras[cand])
    pool = np.flatnonzero(cand)[margin >= 20.0]
    if pool.size == 0:
        pool = np.flatnonzero(cand)[margin >= np.percentile(margin, 90)]
    pick = int(rng.integers(pool.size))
    c = ras[pool[pick]]
    room = float(tree.query(c)[0])
    radius = min(float(rng.uniform(22.0, 38.0)), 0.95 * room)
    t_max = min(float(rng.uniform(9.0, 22.0)), 0.6 * radius)
    box = _box(anat, c, radius + 2 * sp)
    r = _dist_to(anat, box, c)
    lens = t_max * np.clip(1.0 - (r / radius) ** 2, 0.0, None)
    same = _bone_region(_sub(anat.x, box), _sub(anat.y, box), _sub(anat.z, box), anat.midline) == bone
    frac = _lens_fraction(lens, anat.depth[box], sp) * (anat.cavity[box] & same) * (lens > 0)
    blood, mean = _blood(rng, "epidural", frac.shape, sp)
    info = {"centre_ras_mm": _round(c), "radius_mm": round(radius, 2), "max_thickness_mm": round(t_max, 2),
            "bone": _bone_name(bone), "mean_hu": round(mean, 1)}
    return _Bleed("epidural", box, frac.astype(np.float32), blood, info)


def _subdural(anat: _Anatomy, rng: np.random.Generator) -> _Bleed:
    """Crescent along the convexity (crosses sutures, not the falx), or a layer along the falx."""
    sp = anat.spacing
    side = 1.0 if rng.random() < 0.5 else -1.0
    blood_shape: tuple[int, ...]
    if rng.random() < 0.8:
        surf = _surface_voxels(anat)
        ras = _ras_of(anat, surf)
        lateral = side * (ras[:, 0] - anat.midline)
        cand = (lateral > 35.0) & (ras[:, 2] > 0.0) & (ras[:, 2] < 55.0) & (ras[:, 1] > -60.0) & (ras[:, 1] < 25.0)
        pool = np.flatnonzero(cand) if cand.any() else np.flatnonzero(lateral > 0)
        c = ras[pool[int(rng.integers(pool.size))]]
        radius = float(rng.uniform(40.0, 70.0))
        t_max = float(rng.uniform(4.0, 12.0))
        box = _box(anat, c, radius + 2 * sp)
        r = _dist_to(anat, box, c)
        crescent = t_max * np.clip(1.0 - (r / radius) ** 2, 0.0, None) ** 0.6
        keep = (anat.cavity[box] & (side * (_sub(anat.x, box) - anat.midline) > 3.0)
                & (_sub(anat.z, box) > -20.0) & (crescent > 0))
        frac = _lens_fraction(crescent, anat.depth[box], sp) * keep
        info = {"site": "convexity", "centre_ras_mm": _round(c), "radius_mm": round(radius, 2),
                "max_thickness_mm": round(t_max, 2)}
    else:
        y0 = float(rng.uniform(-45.0, 10.0))
        half_len = float(rng.uniform(25.0, 45.0))
        t_max = float(rng.uniform(2.5, 5.0))
        c = np.array([anat.midline, y0, 45.0])
        box = _box(anat, c, max(half_len, 45.0) + 2 * sp)
        x, yy, zz = _sub(anat.x, box), _sub(anat.y, box), _sub(anat.z, box)
        profile = t_max * np.clip(1.0 - ((yy - y0) / half_len) ** 2, 0.0, None) ** 0.5 * np.clip((zz - 12.0) / 8.0, 0, 1)
        off = side * (x - anat.midline)
        frac = np.clip((profile - off) / sp + 0.5, 0.0, 1.0) * (off > -0.5 * sp) * anat.cavity[box] * (profile > 0)
        info = {"site": "falx", "centre_ras_mm": _round(c), "half_length_mm": round(half_len, 2),
                "max_thickness_mm": round(t_max, 2)}
    info["side"] = "right" if side > 0 else "left"
    blood_shape = frac.shape
    blood, mean = _blood(rng, "subdural", blood_shape, sp)
    info["mean_hu"] = round(mean, 1)
    return _Bleed("subdural", box, frac.astype(np.float32), blood, info)


# Typical sites of a spontaneous intraparenchymal bleed (RAS; x is the distance from the midline) and how often.
_IPH_SITES = {"basal_ganglia": ((24.0, 4.0, 2.0), 0.35), "thalamus": ((12.0, -18.0, 6.0), 0.2),
              "lobar": (None, 0.3), "cerebellar": ((24.0, -62.0, -32.0), 0.15)}


def _intraparenchymal(anat: _Anatomy, rng: np.random.Generator) -> _Bleed:
    """Rounded, irregular clot in brain tissue with a hypodense oedema rim."""
    sp = anat.spacing
    names = list(_IPH_SITES)
    site = names[int(rng.choice(len(names), p=[_IPH_SITES[n][1] for n in names]))]
    side = 1.0 if rng.random() < 0.5 else -1.0
    tissue_ok = anat.tpl.brain & ~anat.ventricles & (anat.tpl.p_csf < 0.3)
    if site == "lobar":
        pool = np.argwhere(tissue_ok & (anat.depth >= 18.0) & (anat.depth <= 35.0) & (anat.z > 5.0)
                           & (side * (anat.x - anat.midline) > 10.0))
        target = _ras_of(anat, pool[int(rng.integers(len(pool)))])
    else:
        ref = np.asarray(_IPH_SITES[site][0])
        target = np.array([anat.midline + side * ref[0], ref[1], ref[2]]) + rng.uniform(-4.0, 4.0, 3)
    near = _box(anat, target, 15.0)
    cand = np.argwhere(tissue_ok[near]) + np.array([s.start for s in near])
    c = _ras_of(anat, cand[int(np.argmin(np.linalg.norm(_ras_of(anat, cand) - target, axis=1)))])
    hi = 20.0 if site in ("thalamus", "cerebellar") else 45.0
    v_target = math.exp(rng.uniform(math.log(3.0), math.log(hi)))
    r0 = (3.0 * v_target * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    ratios = np.exp(rng.normal(0.0, 0.15, 3))
    axes = r0 * ratios / np.prod(ratios) ** (1.0 / 3.0)
    q = _random_rotation(rng, 0.0, 180.0)
    rim = float(rng.uniform(2.0, 6.0))
    box = _box(anat, c, 1.5 * axes.max() + rim + 3 * sp)
    local = np.stack(np.broadcast_arrays(_sub(anat.x, box) - c[0], _sub(anat.y, box) - c[1],
                                         _sub(anat.z, box) - c[2]), axis=-1) @ q
    n1 = _smooth_noise(rng, local.shape[:3], max(1.0, 0.35 * r0 / sp))
    d = np.sqrt(np.sum((local / axes) ** 2, axis=-1)) - 0.18 * n1
    allowed = anat.tpl.brain[box] & ~anat.ventricles[box]
    frac = np.clip((1.0 - d) * r0 / sp + 0.5, 0.0, 1.0) * allowed
    clot = frac >= 0.5
    dist = ndimage.distance_transform_edt(~clot, sampling=sp) if clot.any() else np.full(clot.shape, np.inf)
    wobble = _smooth_noise(rng, clot.shape, max(1.0, 2.0 / sp))
    oedema = (dist > 0) & (dist <= rim + 1.0 * wobble) & allowed & (anat.tpl.p_csf[box] < 0.5) & (frac < 0.2)
    blood, mean = _blood(rng, "intraparenchymal", frac.shape, sp)
    oedema_hu = float(rng.uniform(16.0, 24.0))
    info = {"site": site, "side": "right" if side > 0 else "left", "centre_ras_mm": _round(c),
            "target_volume_ml": round(v_target, 2), "oedema_rim_mm": round(rim, 2), "mean_hu": round(mean, 1),
            "oedema_hu": round(oedema_hu, 1)}
    return _Bleed("intraparenchymal", box, frac.astype(np.float32), blood, info, oedema, oedema_hu)


def _intraventricular(anat: _Anatomy, rng: np.random.Generator, gravity: np.ndarray) -> _Bleed:
    """Blood layering in the dependent part of the occipital horns (fluid level ⟂ gravity)."""
    sp = anat.spacing
    vent = anat.ventricles
    idx = np.argwhere(vent)
    ras = _ras_of(anat, idx)
    y_c = float(np.median(ras[:, 1]))
    sides = [1.0, -1.0] if rng.random() < 0.6 else [1.0 if rng.random() < 0.5 else -1.0]
    g_ras = np.array([-gravity[0], -gravity[1], gravity[2]])  # LPS vector → RAS
    g_ras = g_ras / np.linalg.norm(g_ras)
    keep = np.zeros(len(idx), dtype=bool)
    level = np.zeros(len(idx))
    fills = {}
    for side in sides:
        horn = (ras[:, 1] < y_c - 8.0) & (side * (ras[:, 0] - anat.midline) > 2.0)
        if horn.sum() < 8:
            horn = (ras[:, 1] < y_c) & (side * (ras[:, 0] - anat.midline) > 0.0)
        if not horn.any():
            continue
        h = ras[horn] @ g_ras
        fill = float(rng.uniform(0.3, 0.65))
        keep |= horn
        level[horn] = np.percentile(h, 100.0 * (1.0 - fill))
        fills["right" if side > 0 else "left"] = round(fill, 3)
    sel = idx[keep]
    lo = sel.min(axis=0) - 1
    hi = sel.max(axis=0) + 2
    box = tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, anat.shape))
    h_all = (_sub(anat.x, box) * g_ras[0] + _sub(anat.y, box) * g_ras[1] + _sub(anat.z, box) * g_ras[2])
    lvl = np.full(anat.shape, np.inf, dtype=np.float32)
    lvl[tuple(sel.T)] = level[keep]
    lvl_box = ndimage.grey_erosion(lvl[box], size=3)  # horns' neighbours share the level (partial volume)
    csf = anat.tpl.p_csf[box]
    frac = np.clip((h_all - lvl_box) / sp + 0.5, 0.0, 1.0) * np.clip(csf * 1.15, 0.0, 1.0)
    frac = frac * ndimage.binary_dilation(vent[box]) * np.isfinite(lvl_box)
    blood, mean = _blood(rng, "intraventricular", frac.shape, sp)
    info = {"site": "occipital_horns", "sides": sorted(fills), "fill_fraction": fills,
            "gravity_ras": _round(g_ras), "mean_hu": round(mean, 1)}
    return _Bleed("intraventricular", box, np.nan_to_num(frac).astype(np.float32), blood, info)


def _subarachnoid(anat: _Anatomy, rng: np.random.Generator) -> _Bleed:
    """Thin blood replacing CSF in the basal cisterns and sylvian fissures, or in convexity sulci."""
    sp = anat.spacing
    if rng.random() < 0.55:
        spheres = [((anat.midline, -10.0, -14.0), float(rng.uniform(22.0, 30.0)))]
        for side in (1.0, -1.0):
            if rng.random() < 0.85:
                spheres.append(((anat.midline + side * 40.0, 4.0, -4.0), float(rng.uniform(18.0, 26.0))))
        if rng.random() < 0.5:
            spheres.append(((anat.midline, 30.0, 10.0), float(rng.uniform(12.0, 20.0))))
        site = "basal_cisterns"
    else:
        surf = _surface_voxels(anat)
        ras = _ras_of(anat, surf)
        pool = np.flatnonzero((ras[:, 2] > 10.0) & (np.abs(ras[:, 0] - anat.midline) > 15.0))
        c = ras[pool[int(rng.integers(pool.size))]]
        spheres = [(tuple(c), float(rng.uniform(25.0, 45.0)))]
        site = "convexity"
    centres = np.array([s[0] for s in spheres])
    radii = np.array([s[1] for s in spheres])
    lo, hi = (centres - radii[:, None]).min(axis=0), (centres + radii[:, None]).max(axis=0)
    box = _box(anat, (lo + hi) / 2.0, float((hi - lo).max()) / 2.0 + 2 * sp)
    weight = np.zeros(anat.space[box].shape, dtype=np.float32)
    for (cx, cy, cz), rad in spheres:
        r = _dist_to(anat, box, np.array([cx, cy, cz]))
        weight = np.maximum(weight, np.clip((rad - r) / 5.0, 0.0, 1.0))
    density = float(rng.uniform(0.9, 1.0))
    frac = np.clip(anat.space[box] * 1.25, 0.0, 1.0) * weight * density
    blood, mean = _blood(rng, "subarachnoid", frac.shape, sp)
    info = {"site": site, "spheres_ras_mm": [[*_round(np.asarray(c)), round(r, 2)] for c, r in spheres],
            "mean_hu": round(mean, 1)}
    return _Bleed("subarachnoid", box, frac.astype(np.float32), blood, info)


def _draw_subtypes(rng: np.random.Generator) -> frozenset[str]:
    """One (55 %), two (30 %) or three (15 %) subtypes, weighted by how common they are."""
    n = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    picks = rng.choice(len(SUBTYPES), size=n, replace=False, p=_SUBTYPE_WEIGHTS)
    return frozenset(SUBTYPES[int(i)] for i in picks)


@dataclass
class _Painted:
    hu: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    subtypes: frozenset[str]
    bleeds: list[dict]


def _paint(anat: _Anatomy, seed: int, *, hemorrhage: bool, subtypes: frozenset[str] | None,
           gravity: np.ndarray) -> _Painted:
    """Draw and paint the bleeds of case *seed* on the anatomy (the one bleed code path)."""
    rng = np.random.default_rng([int(seed), 0xC7B1])
    chosen = (subtypes if subtypes is not None else _draw_subtypes(rng)) if hemorrhage else frozenset()
    min_vox = max(4, int(round(40.0 / anat.spacing**3)))
    for attempt in range(6):
        hu = anat.hu.copy()
        tissue = anat.tissue.copy()
        labels = np.zeros(anat.shape, dtype=np.uint8)
        infos = []
        for subtype in _PAINT_ORDER:
            if subtype not in chosen:
                continue
            if subtype == "epidural":
                b = _epidural(anat, rng)
            elif subtype == "subdural":
                b = _subdural(anat, rng)
            elif subtype == "intraparenchymal":
                b = _intraparenchymal(anat, rng)
            elif subtype == "intraventricular":
                b = _intraventricular(anat, rng, gravity)
            else:
                b = _subarachnoid(anat, rng)
            sub = hu[b.box]
            if b.oedema is not None:
                sub[b.oedema] = b.oedema_hu + 0.3 * (sub[b.oedema] - _HU["wm"])  # a trace of grey/white
                tissue[b.box][b.oedema] = _T["oedema"]
            hu[b.box] = sub * (1.0 - b.fraction) + b.fraction * b.blood_hu
            labels[b.box][b.fraction >= 0.5] = _LABEL_OF[subtype]
            infos.append({"subtype": subtype, **b.info})
        counts = np.bincount(labels.ravel(), minlength=len(SUBTYPES) + 1)
        if all(counts[_LABEL_OF[s]] >= min_vox for s in chosen):
            break
        log.debug("synth.hemorrhage.redraw", seed=seed, attempt=attempt)
    return _Painted(hu, labels, tissue, frozenset(chosen), infos)


# --------------------------------------------------------------------------
# Scanner physics: beam hardening and quantum noise
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _projector(shape: tuple[int, int], n_angles: int) -> tuple[sparse.csr_matrix, int]:
    """Parallel-beam projector (n_angles·n_bins × pixels, linear interpolation between bins)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy -= (h - 1) / 2.0
    xx -= (w - 1) / 2.0
    n_bins = int(math.ceil(math.hypot(h, w))) + 4
    theta = np.arange(n_angles) * math.pi / n_angles
    t = (np.cos(theta)[:, None] * xx.ravel()[None] + np.sin(theta)[:, None] * yy.ravel()[None]) + n_bins / 2.0
    i0 = np.floor(t).astype(np.int64)
    frac = t - i0
    rows = (i0 + (np.arange(n_angles) * n_bins)[:, None])
    cols = np.broadcast_to(np.arange(h * w)[None], rows.shape)
    a = sparse.csr_matrix(
        (np.concatenate([(1.0 - frac).ravel(), frac.ravel()]).astype(np.float32),
         (np.concatenate([rows.ravel(), rows.ravel() + 1]), np.concatenate([cols.ravel(), cols.ravel()]))),
        shape=(n_angles * n_bins + 1, h * w))
    return a, n_bins


@functools.lru_cache(maxsize=8)
def _ramlak(n_bins: int) -> np.ndarray:
    """FFT of the Ram-Lak filter (unit sample spacing) for zero-padded rows of *n_bins*."""
    size = 1 << int(math.ceil(math.log2(2 * n_bins)))
    k = np.arange(-(size // 2), size // 2)
    h = np.zeros(size)
    h[size // 2] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    return np.fft.rfft(np.fft.ifftshift(h))


def _beam_hardening(hu: np.ndarray, pixel_mm: float, water: float, bone: float, n_angles: int = 90) -> np.ndarray:
    """HU error of first-order beam hardening in a stack of axial slices (z, y, x).

    The line integrals of water-equivalent (Lw) and bone (Lb) path lengths are
    computed on a ≤128-pixel copy of each slice, the measured projection loses
    ``water·Lw² + bone·Lb²`` (polychromatic spectrum, after the vendor's
    correction), and that error is reconstructed by filtered back-projection:
    it gives the darker centre (cupping) and dark streaks between the dense
    bones of the skull base. The scanner's water calibration keeps soft
    tissue right on average: each slice's mean error over soft tissue is removed.
    """
    n, h, w = hu.shape
    f = max(1, int(math.ceil(max(h, w) / 128)))
    hp, wp = -(-h // f) * f, -(-w // f) * f
    pad = np.pad(hu, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    small = pad.reshape(n, hp // f, f, wp // f, f).mean(axis=(2, 4))
    px_cm = pixel_mm * f / 10.0
    a, n_bins = _projector(small.shape[1:], n_angles)
    flat = small.reshape(n, -1).T  # pixels × slices
    lw = (a @ (np.clip(flat + 1000.0, 0.0, None) / 1000.0))[:-1] * px_cm
    lb = (a @ (np.clip(flat - 200.0, 0.0, None) / 1000.0))[:-1] * px_cm
    err = -(water * lw**2 + bone * lb**2)  # (angles·bins) × slices
    err = err.T.reshape(n, n_angles, n_bins)
    filt = _ramlak(n_bins)
    size = 2 * (len(filt) - 1)
    q = np.fft.irfft(np.fft.rfft(err, n=size, axis=2) * filt, n=size, axis=2)[:, :, :n_bins]
    q = np.concatenate([q.reshape(n, -1), np.zeros((n, 1))], axis=1).T
    back = (a.T @ q).T * (math.pi / n_angles)
    dhu = (1000.0 * back / px_cm).reshape(small.shape).astype(np.float32)
    if f > 1:  # smooth upsampling: repeat, then a box of the same width (linear interpolation)
        dhu = ndimage.uniform_filter1d(np.repeat(dhu, f, axis=1), f, axis=1, mode="nearest")
        dhu = ndimage.uniform_filter1d(np.repeat(dhu, f, axis=2), f, axis=2, mode="nearest")
    big = dhu[:, :h, :w]
    soft = np.abs(hu) < 100.0
    counts = soft.sum(axis=(1, 2))
    means = np.where(counts > 0, (big * soft).sum(axis=(1, 2)) / np.maximum(counts, 1), 0.0)
    return big - means[:, None, None].astype(np.float32)


def _quantum_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float, sigma_px: float) -> np.ndarray:
    """Gaussian noise correlated in-plane by the reconstruction kernel (σ px), standard deviation *sd*."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0:
        r = int(math.ceil(4 * sigma_px))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
        k /= k.sum()
        sig = (0,) * (len(shape) - 2) + (sigma_px, sigma_px)
        n = ndimage.gaussian_filter(n, sig, truncate=4.0) / np.float32((k**2).sum())
    return n * np.float32(sd)


def _scanner(hu: np.ndarray, pixel_mm: float, rng: np.random.Generator, *, sigma_px: float) -> tuple[np.ndarray, dict]:
    """Beam hardening then quantum noise on a stack of axial slices (z, y, x); returns HU and the parameters."""
    water = float(rng.uniform(0.0004, 0.0009))
    bone = float(rng.uniform(0.006, 0.014))
    sd = float(rng.uniform(3.0, 6.0))
    out = hu + _beam_hardening(hu, pixel_mm, water, bone)
    out += _quantum_noise(rng, hu.shape, sd, sigma_px)
    return out, {"noise_sd_hu": round(sd, 3), "beam_hardening_water": round(water, 6),
                 "beam_hardening_bone": round(bone, 6)}


# --------------------------------------------------------------------------
# Template-space case (shared with training)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class CTCase:
    """A head CT with bleeds on a template grid (no DICOM); arrays are (z, y, x), z axial.

    ``hu``: float32 HU with beam hardening and noise (``clean_hu`` without);
    ``labels``: uint8 :data:`LABELS`; ``tissue``: uint8 :data:`TISSUES`;
    ``slice_truth``: one dict per axial slice (index z): ``any`` and each subtype (bool).
    ``spacing``/``origin``/``direction`` are SimpleITK-style (x, y, z) in LPS mm.
    """

    seed: int
    anatomy: str
    hu: np.ndarray
    clean_hu: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    slice_truth: list[dict[str, bool]]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    subtypes: tuple[str, ...]
    volumes_ml: dict[str, float]
    bleeds: list[dict] = field(default_factory=list)
    scanner: dict = field(default_factory=dict)

    def image(self, array: np.ndarray) -> sitk.Image:
        """Wrap *array* (z, y, x) as a SimpleITK image with the case geometry."""
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


def _slice_truth(labels: np.ndarray) -> list[dict[str, bool]]:
    """Per axial slice (axis 0): any bleed and each subtype."""
    present = np.zeros((labels.shape[0], len(SUBTYPES) + 1), dtype=bool)
    for value in LABELS:
        present[:, value] = (labels == value).any(axis=(1, 2))
    return [{"any": bool(row[1:].any()), **{name: bool(row[v]) for v, name in LABELS.items()}} for row in present]


def _volumes(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=len(SUBTYPES) + 1)
    vols = {name: round(float(counts[v]) * voxel_ml, 4) for v, name in LABELS.items()}
    vols["total"] = round(float(counts[1:].sum()) * voxel_ml, 4)
    return vols


def synthesize_ct_case(seed: int, *, spacing: float = 2.0, anatomy: str = "colin27",
                       subtypes: Iterable[str] | None = None, hemorrhage: bool = True,
                       artefacts: bool = True) -> CTCase:
    """Head CT with bleeds in template space, for training (slice it axially yourself).

    *subtypes* None draws one to three subtypes from the seed; a set forces
    exactly those; ``hemorrhage=False`` gives a normal head. ``artefacts``
    adds beam hardening and quantum noise (3–6 HU) per axial slice. The
    bleeds are those :func:`generate_hemorrhage_study` draws for the same
    seed (there, at 1 mm, with the fluid level of the patient's head tilt).
    """
    if spacing not in (1.0, 2.0):
        raise ValueError("spacing: must be 1.0 or 2.0 mm")
    check_anatomy(anatomy)
    wanted = check_subtypes(subtypes)
    if not hemorrhage and wanted is not None:
        raise ValueError("subtypes: must be None when hemorrhage is False")
    anat = _ct_anatomy(float(spacing), anatomy)
    painted = _paint(anat, seed, hemorrhage=hemorrhage, subtypes=wanted, gravity=np.array([0.0, 1.0, 0.0]))
    hu, scanner = painted.hu, {}
    if artefacts:
        hu, scanner = _scanner(painted.hu, anat.spacing, np.random.default_rng([int(seed), 0xC7C1]),
                               sigma_px=0.0 if spacing >= 2.0 else 0.5)
    tpl = anat.tpl
    return CTCase(
        seed=int(seed), anatomy=anatomy, hu=hu.astype(np.float32), clean_hu=painted.hu, labels=painted.labels,
        tissue=painted.tissue, slice_truth=_slice_truth(painted.labels), spacing=(tpl.spacing,) * 3,
        origin=tuple(float(v) for v in tpl.origin), direction=tuple(float(v) for v in tpl.direction),  # type: ignore[arg-type]
        subtypes=tuple(s for s in SUBTYPES if s in painted.subtypes),
        volumes_ml=_volumes(painted.labels, tpl.spacing**3 / 1000.0), bleeds=painted.bleeds, scanner=scanner)


def _round(v: np.ndarray, nd: int = 3) -> list[float]:
    return [round(float(x), nd) for x in np.asarray(v).ravel()]


# --------------------------------------------------------------------------
# Scanner: vendor dialects
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Vendor:
    manufacturer: str
    models: tuple[tuple[str, str], ...]  # (model, convolution kernel)
    software: str
    station: str
    thicknesses: tuple[float, ...]
    series_number: int
    study_description: str
    protocol: str
    bits_stored: int
    signed: bool
    ma: tuple[int, int]
    collimation: tuple[float, int]  # single width (mm), channels
    source_detector_mm: float
    source_patient_mm: float
    data_collection_mm: float
    focal_spot: str
    image_type_extra: tuple[str, ...]


_CT_VENDORS: dict[str, _Vendor] = {
    "ge": _Vendor("GE MEDICAL SYSTEMS", (("Revolution CT", "STANDARD"), ("Revolution EVO", "STANDARD"),
                                         ("Revolution CT", "SOFT")),
                  "revo_ct_22bc.50", "CTAWP{n:05d}", (2.5, 3.75, 5.0), 2, "CT HEAD WO CONTRAST",
                  "5.1 HEAD ROUTINE", 16, True, (220, 300), (0.625, 32), 946.746, 538.52, 250.0, "0.7", ()),
    "siemens": _Vendor("SIEMENS", (("SOMATOM Definition AS+", "H30s"), ("SOMATOM go.Up", "Hr38"),
                                   ("SOMATOM Definition Edge", "H31s")),
                       "syngo CT VB20A", "CT{n:05d}", (3.0, 4.0, 5.0), 3, "CT HEAD WO CONTRAST",
                       "HeadSeq", 12, False, (280, 380), (0.6, 32), 1085.6, 595.0, 500.0, "1.2",
                       ("CT_SOM5 SEQ",)),
}


def _series_description(vendor: str, thickness: float, kernel: str) -> str:
    if vendor == "ge":
        return f"HEAD {thickness:g}mm {'STND' if kernel == 'STANDARD' else kernel}"
    return f"Head {thickness:.1f} {kernel}"


# --------------------------------------------------------------------------
# Study
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class HemorrhageStudy:
    """A written head CT study and where its ground truth lies."""

    out_dir: Path
    study: GeneratedStudy
    geometry: SeriesGeometry
    labels_path: Path
    tissues_path: Path
    truth_path: Path
    truth: dict
    seed: int
    vendor: str
    anatomy: str
    seconds: float = 0.0

    @property
    def series(self) -> GeneratedSeries:
        return self.study.series[0]

    @property
    def series_dir(self) -> Path:
        return self.study.out_dir / str(self.series.series_number)


def generate_hemorrhage_study(
    out_dir: Path | str,
    *,
    seed: int = 0,
    hemorrhage: bool = True,
    subtypes: Iterable[str] | None = None,
    anatomy: str = "colin27",
    slice_mm: float | None = None,
    vendor: str | None = None,
) -> HemorrhageStudy:
    """Write a head CT under ``out_dir/dicom/<series>/`` and its truth under ``out_dir/ground_truth``.

    One axial series of 512×512 slices (thickness drawn from the vendor's
    usual 2.5–5 mm unless *slice_mm* forces it) through a tilted gantry, a
    head turned by a few degrees (yaw, roll), vendor-like headers, beam
    hardening and quantum noise. Bleeds as in :func:`synthesize_ct_case`
    (drawn at 1 mm, the same for the same seed); ground truth: ``labels.nii.gz``
    (subtype per voxel, series geometry), ``tissues.nii.gz`` (anatomy,
    slab centre) and ``truth.json`` (subtypes, volumes from the series label
    map, per-slice labels keyed by SOPInstanceUID and InstanceNumber).
    """
    t_start = time.perf_counter()
    check_anatomy(anatomy)
    wanted = check_subtypes(subtypes)
    if vendor not in (None, "ge", "siemens"):
        raise ValueError("vendor: must be 'ge', 'siemens' or None")
    if slice_mm is not None and not 1.0 <= float(slice_mm) <= 10.0:
        raise ValueError("slice_mm: must be in [1, 10] mm")
    if not hemorrhage and wanted is not None:
        raise ValueError("subtypes: must be None when hemorrhage is False")
    out_dir = Path(out_dir)
    rng = np.random.default_rng([int(seed), 0xC7D1])
    drawn_vendor = "ge" if rng.integers(0, 2) else "siemens"
    vendor = vendor or drawn_vendor
    vend = _CT_VENDORS[vendor]
    model, kernel = vend.models[int(rng.integers(len(vend.models)))]
    drawn_thickness = float(vend.thicknesses[int(rng.integers(len(vend.thicknesses)))])
    thickness = round(float(slice_mm), 4) if slice_mm is not None else drawn_thickness

    # Head in the scanner: turned (yaw about S-I, roll about A-P), placed on the table.
    yaw, roll = float(rng.uniform(-8.0, 8.0)), float(rng.uniform(-6.0, 6.0))
    rot = _rot_z(yaw) @ _rot_y(roll)
    c_p = np.array([rng.uniform(-5.0, 5.0), rng.uniform(-20.0, 10.0), rng.uniform(-120.0, 40.0)])
    plane_tilt = float(rng.uniform(8.0, 22.0))  # slice plane: anterior up, as planned along the orbitomeatal line
    fov = float(rng.choice([220.0, 230.0, 240.0, 250.0]))
    fov_offset = rng.uniform(-4.0, 4.0, 2)
    study_dt = _dt.datetime(2024, 1, 1, 0, 0) + _dt.timedelta(days=int(rng.integers(0, 365)),
                                                              minutes=int(rng.integers(0, 1440)))
    sex = "F" if rng.integers(0, 2) else "M"
    age_years = int(rng.integers(18, 92))
    birth = _dt.date(study_dt.year - age_years, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    ma = int(rng.integers(vend.ma[0], vend.ma[1] + 1))
    station_no = int(rng.integers(1, 99999))
    table_height = round(float(rng.uniform(120.0, 180.0)), 1)

    anat = _ct_anatomy(1.0, anatomy)
    tpl = anat.tpl
    c_t = tpl.index_to_lps(np.argwhere(tpl.brain).mean(axis=0))
    gravity_t = rot.T @ np.array([0.0, 1.0, 0.0])  # supine: blood settles posteriorly (LPS +y)
    painted = _paint(anat, seed, hemorrhage=hemorrhage, subtypes=wanted, gravity=gravity_t)
    to_template = sitk.AffineTransform(3)  # patient point → template point
    to_template.SetMatrix(tuple(rot.T.ravel()))
    to_template.SetTranslation(tuple(c_t - rot.T @ c_p))

    geom = _plan(anat, rot, c_t, c_p, plane_tilt, thickness, fov, fov_offset)
    slab = _slab_mean(_neck_padded(tpl, painted.hu), geom, to_template)
    labels = _slab_labels(_neck_padded(tpl, painted.labels), geom, to_template)
    tissues = _resample_to(_neck_padded(tpl, painted.tissue), geom, to_template, nearest=True, default=0)
    pixel_hu, scanner = _scanner(slab, geom.pixel, np.random.default_rng([int(seed), 0xC7E1]), sigma_px=0.7)
    key = (f"radnode-synth-hemorrhage|{seed}|{int(hemorrhage)}|"
           f"{','.join(sorted(wanted)) if wanted else '-'}|{anatomy}|{thickness:g}|{vendor}")

    def uid(*parts: object) -> str:
        return derive_uid("radnode.synth.hemorrhage", key, *map(str, parts))

    ids = _StudyIds(
        patient_name=f"SYNTH^HEAD{seed}", patient_id=f"RNHEM{seed:06d}"[:64],
        accession=f"H{seed % 10**9:09d}", study_uid=uid("study"), series_uid=uid("series"),
        for_uid=uid("frame-of-reference"), study_dt=study_dt, birth=birth, sex=sex, age_years=age_years)
    series_dir = out_dir / "dicom" / str(vend.series_number)
    series_dir.mkdir(parents=True, exist_ok=True)
    description = _series_description(vendor, thickness, kernel)
    stored = _stored_values(pixel_hu, vend)
    files, sops = [], []
    for k in range(geom.size[2]):
        sop = uid("instance", k + 1)
        ds = _ct_dataset(vend=vend, vendor=vendor, model=model, kernel=kernel, ids=ids, sop_uid=sop,
                         geom=geom, k=k, pixels=stored[k], description=description, ma=ma,
                         station_no=station_no, table_height=table_height, gantry_tilt=-plane_tilt)
        path = series_dir / f"{k + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop)

    gt_dir = out_dir / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    labels_path, tissues_path = gt_dir / "labels.nii.gz", gt_dir / "tissues.nii.gz"
    _write_nifti(labels, geom, labels_path)
    _write_nifti(tissues, geom, tissues_path)
    truth = _truth(labels, geom, sops, seed=seed, hemorrhage=hemorrhage, wanted=wanted, vendor=vendor,
                   model=model, kernel=kernel, anatomy=anatomy, yaw=yaw, roll=roll, rot=rot, c_t=c_t, c_p=c_p,
                   plane_tilt=plane_tilt, painted=painted, scanner=scanner, ids=ids,
                   series_number=vend.series_number, description=description)
    truth_path = gt_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")

    series = GeneratedSeries(ids.series_uid, vend.series_number, "ct_head", description, len(files), files, sops)
    study = GeneratedStudy(out_dir / "dicom", ids.study_uid, ids.accession, ids.patient_id, ids.patient_name,
                           vendor, ids.for_uid, [series])
    seconds = time.perf_counter() - t_start
    log.info("synth.hemorrhage.written", out_dir=str(out_dir), seed=seed, vendor=vendor, anatomy=anatomy,
             subtypes=truth["subtypes_present"], total_ml=truth["volumes_ml"]["total"], slices=len(files),
             seconds=round(seconds, 2))
    return HemorrhageStudy(out_dir, study, geom, labels_path, tissues_path, truth_path, truth, int(seed), vendor,
                           anatomy, seconds)


def _rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])


def _plan(anat: _Anatomy, rot: np.ndarray, c_t: np.ndarray, c_p: np.ndarray, plane_tilt: float,
          thickness: float, fov: float, fov_offset: np.ndarray) -> SeriesGeometry:
    """Contiguous tilted axial slices from the foramen magnum to the vertex.

    Rows run to the patient's left; columns run posterior and, by the gantry
    tilt, inferior: ``col = (0, cos τ, −sin τ)``, so the slice normal is
    ``(0, sin τ, cos τ)``. The slices are stacked along that normal (each
    ImagePositionPatient is the previous one plus spacing × normal), so the
    series is an oblique but unsheared volume that readers going by IPP/IOP
    rebuild exactly.
    """
    tau = math.radians(plane_tilt)
    row = _unit(np.array([1.0, 0.0, 0.0]))
    col = _unit(np.array([0.0, math.cos(tau), -math.sin(tau)]))
    normal = np.cross(np.asarray(row), np.asarray(col))
    tpl = anat.tpl
    step = max(1, int(round(3.0 / tpl.spacing)))
    sub = np.zeros(tpl.shape, dtype=bool)
    sub[::step, ::step, ::step] = True

    def proj(mask: np.ndarray) -> np.ndarray:
        pts = tpl.index_to_lps(np.argwhere(mask & sub))
        return (pts - c_t) @ rot.T @ normal + float(c_p @ normal)

    cav = proj(anat.cavity)
    head = proj(anat.tissue > 0)
    bottom = float(np.percentile(cav, 0.5)) - 2.0
    top = float(head.max()) + 2.0
    n = int(math.ceil((top - bottom) / thickness)) + 1
    mid_s = bottom + (n - 1) * thickness / 2.0
    centre = (c_p + (mid_s - float(c_p @ normal)) * normal + fov_offset[0] * np.asarray(row)
              + fov_offset[1] * np.asarray(col))
    pixel = round(fov / 512.0, 6)
    return _grid(centre, row, col, pixel, 512, 512, n, thickness, thickness)


def _neck_padded(tpl: Template, array: np.ndarray, mm: float = 60.0) -> sitk.Image:
    """*array* as an image with its lowest axial slice repeated *mm* further down.

    Tilted slices through the skull base reach below the template grid
    behind the head; repeating the neck keeps them from ending in a flat cut.
    """
    n = int(round(mm / tpl.spacing))
    img = tpl.image(np.pad(array, ((n, 0), (0, 0), (0, 0)), mode="edge"))
    d = np.asarray(tpl.direction).reshape(3, 3)
    img.SetOrigin(tuple(np.asarray(tpl.origin) - d[:, 2] * n * tpl.spacing))
    return img


def _resample_to(image: sitk.Image, geom: SeriesGeometry, transform: sitk.Transform, *, nearest: bool,
                 default: float, shift_mm: float = 0.0) -> np.ndarray:
    """Sample a template image on the series grid (shifted along the normal); (slices, rows, columns)."""
    ref = geom.reference()
    if shift_mm:
        ref.SetOrigin(tuple(np.asarray(geom.origin) + shift_mm * geom.normal))
    return sitk.GetArrayFromImage(sitk.Resample(
        image, ref, transform, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear, default,
        image.GetPixelID()))


def _sub_slices(thickness: float) -> np.ndarray:
    """Offsets (mm) across a slab that sample its profile (≥ 3, about one per mm)."""
    k = max(3, int(math.ceil(thickness)))
    return ((np.arange(k) + 0.5) / k - 0.5) * thickness


def _slab_mean(image: sitk.Image, geom: SeriesGeometry, transform: sitk.Transform) -> np.ndarray:
    """HU averaged over the slice thickness (partial volume of a thick slice)."""
    offs = _sub_slices(geom.thickness)
    acc = None
    for o in offs:
        a = _resample_to(image, geom, transform, nearest=False, default=_HU["air"], shift_mm=float(o))
        acc = a if acc is None else acc + a
    return (acc / len(offs)).astype(np.float32)


def _slab_labels(image: sitk.Image, geom: SeriesGeometry, transform: sitk.Transform) -> np.ndarray:
    """Label of each series voxel: the subtype covering most of the slab, if it covers more than half."""
    offs = _sub_slices(geom.thickness)
    samples = np.stack([_resample_to(image, geom, transform, nearest=True, default=0, shift_mm=float(o))
                        for o in offs])
    out = np.zeros(samples.shape[1:], dtype=np.uint8)
    best = np.zeros(samples.shape[1:], dtype=np.int16)
    for value in np.unique(samples):
        if value == 0:
            continue
        count = (samples == value).sum(axis=0, dtype=np.int16)
        win = (count > best) & (2 * count > len(offs))
        out[win] = value
        best = np.maximum(best, count)
    return out


def _stored_values(hu: np.ndarray, vend: _Vendor) -> np.ndarray:
    """HU → stored pixels (intercept −1024); GE pads outside the reconstruction circle with −2000."""
    values = np.rint(np.clip(hu, -1024.0, 3071.0) + 1024.0)
    if not vend.signed:
        return values.astype(np.uint16)
    n = hu.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n]
    outside = np.hypot(yy - (n - 1) / 2.0, xx - (n - 1) / 2.0) > n / 2.0
    values[:, outside] = _GE_PADDING
    return values.astype(np.int16)


_GE_PADDING = -2000


def _write_nifti(array: np.ndarray, geom: SeriesGeometry, path: Path) -> None:
    img = sitk.GetImageFromArray(array.astype(np.uint8))
    img.CopyInformation(geom.reference())
    sitk.WriteImage(img, str(path), useCompression=True)


@dataclass(frozen=True)
class _StudyIds:
    patient_name: str
    patient_id: str
    accession: str
    study_uid: str
    series_uid: str
    for_uid: str
    study_dt: _dt.datetime
    birth: _dt.date
    sex: str
    age_years: int


def _ct_dataset(*, vend: _Vendor, vendor: str, model: str, kernel: str, ids: _StudyIds, sop_uid: str,
                geom: SeriesGeometry, k: int, pixels: np.ndarray, description: str, ma: int, station_no: int,
                table_height: float, gantry_tilt: float) -> Dataset:
    """One CT Image Storage dataset (all modules the IOD requires, vendor-like values)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADNODE_SYNTH"

    series_dt = ids.study_dt + _dt.timedelta(minutes=2)
    per_rotation = max(1, int(vend.collimation[0] * vend.collimation[1] // geom.thickness))
    acq_dt = series_dt + _dt.timedelta(seconds=2 * (k // per_rotation))
    position = geom.slice_position(k)
    cols, rows, n = geom.size
    centre = position + (cols - 1) / 2 * geom.pixel * np.asarray(geom.row_dir) + \
        (rows - 1) / 2 * geom.pixel * np.asarray(geom.col_dir)

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", *vend.image_type_extra]
    ds.InstanceCreationDate = series_dt.strftime("%Y%m%d")
    ds.InstanceCreationTime = series_dt.strftime("%H%M%S")
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ids.study_dt.strftime("%Y%m%d")
    ds.SeriesDate = series_dt.strftime("%Y%m%d")
    ds.AcquisitionDate = acq_dt.strftime("%Y%m%d")
    ds.ContentDate = series_dt.strftime("%Y%m%d")
    ds.StudyTime = ids.study_dt.strftime("%H%M%S")
    ds.SeriesTime = series_dt.strftime("%H%M%S")
    ds.AcquisitionTime = acq_dt.strftime("%H%M%S")
    ds.ContentTime = (series_dt + _dt.timedelta(seconds=20)).strftime("%H%M%S")
    ds.AccessionNumber = ids.accession
    ds.Modality = "CT"
    ds.Manufacturer = vend.manufacturer
    ds.InstitutionName = "RADNODE SYNTHETIC HOSPITAL"
    ds.ReferringPhysicianName = "REFERRER^SYNTH"
    ds.StationName = vend.station.format(n=station_no)
    ds.StudyDescription = vend.study_description
    ds.SeriesDescription = description
    ds.ManufacturerModelName = model
    ds.PatientName = ids.patient_name
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ids.birth.strftime("%Y%m%d")
    ds.PatientSex = ids.sex
    ds.PatientAge = f"{ids.age_years:03d}Y"
    ds.BodyPartExamined = "HEAD"
    ds.ScanOptions = "AXIAL MODE" if vendor == "ge" else "SEQ"
    ds.SliceThickness = _ds(geom.thickness)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = _ds(geom.slice_spacing)
    ds.DataCollectionDiameter = _ds(vend.data_collection_mm)
    ds.DeviceSerialNumber = str(station_no)
    ds.SoftwareVersions = vend.software
    ds.ProtocolName = vend.protocol
    ds.ReconstructionDiameter = _ds(round(geom.pixel * cols, 1))
    ds.DistanceSourceToDetector = _ds(vend.source_detector_mm)
    ds.DistanceSourceToPatient = _ds(vend.source_patient_mm)
    ds.GantryDetectorTilt = _ds(round(gantry_tilt, 1))
    ds.TableHeight = _ds(table_height)
    ds.RotationDirection = "CW"
    ds.ExposureTime = "1000"
    ds.XRayTubeCurrent = str(ma)
    ds.Exposure = str(ma)
    if vendor == "ge":
        ds.FilterType = "HEAD FILTER"
    ds.GeneratorPower = str(int(round(120 * ma / 1000)))
    ds.FocalSpots = vend.focal_spot
    ds.ConvolutionKernel = kernel
    ds.PatientPosition = "HFS"
    ds.RevolutionTime = 1.0
    ds.SingleCollimationWidth = float(vend.collimation[0])
    ds.TotalCollimationWidth = round(vend.collimation[0] * vend.collimation[1], 3)
    ds.CTDIvol = round(0.19 * ma, 2)
    phantom = Dataset()
    phantom.CodeValue = "113691"
    phantom.CodingSchemeDesignator = "DCM"
    phantom.CodeMeaning = "IEC Head Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = [phantom]
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = ids.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = vend.series_number
    ds.AcquisitionNumber = k // per_rotation + 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*geom.row_dir, *geom.col_dir)]
    ds.FrameOfReferenceUID = ids.for_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(round(float(centre[2]), 3))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [_ds(geom.pixel), _ds(geom.pixel)]
    ds.BitsAllocated = 16
    ds.BitsStored = vend.bits_stored
    ds.HighBit = vend.bits_stored - 1
    ds.PixelRepresentation = 1 if vend.signed else 0
    if vend.signed:
        ds.PixelPaddingValue = _GE_PADDING
        ds["PixelPaddingValue"].VR = "SS"
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = "BRAIN"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _truth(labels: np.ndarray, geom: SeriesGeometry, sops: list[str], *, seed: int, hemorrhage: bool,
           wanted: frozenset[str] | None, vendor: str, model: str, kernel: str, anatomy: str, yaw: float,
           roll: float, rot: np.ndarray, c_t: np.ndarray, c_p: np.ndarray, plane_tilt: float,
           painted: _Painted, scanner: dict, ids: _StudyIds, series_number: int, description: str) -> dict:
    """truth.json: what is where, measured on the series label map."""
    voxel_ml = geom.pixel * geom.pixel * geom.slice_spacing / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(SUBTYPES) + 1)
    per = _slice_truth(labels)
    slices = [{"instance_number": k + 1, "sop_instance_uid": sop, "slice_index": k, **per[k]}
              for k, sop in enumerate(sops)]
    present = [name for v, name in LABELS.items() if counts[v] > 0]
    return {
        "seed": int(seed),
        "hemorrhage": bool(hemorrhage),
        "subtypes_requested": sorted(wanted, key=SUBTYPES.index) if wanted else None,
        "subtypes_present": present,
        "labels": {str(v): name for v, name in LABELS.items()},
        "volumes_ml": _volumes(labels, voxel_ml),
        "voxel_volume_ml": voxel_ml,
        "voxel_counts": {name: int(counts[v]) for v, name in LABELS.items()},
        "label_map": "labels.nii.gz",
        "tissue_map": "tissues.nii.gz",
        "tissues": {str(v): name for v, name in TISSUES.items()},
        "study_instance_uid": ids.study_uid,
        "series_instance_uid": ids.series_uid,
        "series_number": series_number,
        "series_description": description,
        "slices": slices,
        "per_slice": {s["sop_instance_uid"]: {k: v for k, v in s.items() if k != "sop_instance_uid"} for s in slices},
        "vendor": vendor,
        "manufacturer_model": model,
        "convolution_kernel": kernel,
        "anatomy": anatomy,
        "geometry": {"rows": geom.size[1], "columns": geom.size[0], "slices": geom.size[2],
                     "pixel_mm": geom.pixel, "slice_thickness_mm": geom.thickness,
                     "slice_spacing_mm": geom.slice_spacing, "row_dir": list(geom.row_dir),
                     "col_dir": list(geom.col_dir), "origin_lps_mm": list(geom.origin)},
        "gantry_tilt_deg": round(-plane_tilt, 1),
        "slice_plane_tilt_deg": round(plane_tilt, 3),
        "head_rotation_deg": {"yaw": round(yaw, 3), "roll": round(roll, 3)},
        "template_to_patient": {
            "rotation": [[round(float(x), 8) for x in row] for row in rot],
            "template_centre_lps_mm": _round(c_t, 4),
            "patient_centre_lps_mm": _round(c_p, 4),
            "formula": "p = R @ (t - template_centre) + patient_centre",
        },
        "bleeds": painted.bleeds,
        "scanner": scanner,
    }
