"""Brain extraction on a T1-weighted volume: deepbet (ONNX) or a registered template.

Why deepbet: it is a trained, MIT-licensed network whose weights ship in its
wheel, so it works offline; converted once to ONNX
(:mod:`radnode.analyzers.brain_extraction_export`) it runs under onnxruntime
without torch in ~3 s on 2 threads. The preprocessing here reproduces
``deepbet.bet.BrainExtraction.run_model`` step by step (closest-canonical RAS
array, nearest-exact resizing, 0.5/99.5 % quantile clipping, the .226/.449
re-standardisation, bounding box from the 128³ net with 10 % margin, 256³ mask
net, largest component + hole filling), because the nets only behave as
published on exactly that input.

The ``template`` method (affine registration of a skull-on template, then
warping its brain mask) is the fallback when the ONNX files are absent or a
caller asks for it; it is coarser (a few mm at the cortex).
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import structlog
from scipy import ndimage

from radnode.analyzers.base import AnalyzerError, InputError

log = structlog.get_logger(__name__)

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "deepbet"
BBOX_MODEL = MODEL_DIR / "bbox.onnx"
MASK_MODEL = MODEL_DIR / "mask.onnx"
MODEL_VERSION = "deepbet-1.0.2"

_MRICRON = Path("/usr/share/mricron/templates")
_NILEARN_FILES = (
    "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
)

_lock = threading.Lock()


def deepbet_available() -> bool:
    """Whether the converted deepbet ONNX files are installed."""
    return BBOX_MODEL.is_file() and MASK_MODEL.is_file()


def extract_brain(image: sitk.Image, method: str = "deepbet", *, threshold: float = 0.5) -> sitk.Image:
    """Binary (uint8) brain mask of a T1-weighted ``image``, on the same grid.

    ``method`` is ``"deepbet"`` (falls back to ``"template"`` with a warning when
    the ONNX files are missing) or ``"template"``.
    """
    if image.GetDimension() != 3:
        raise InputError(f"brain extraction needs a 3-D image, got {image.GetDimension()}-D")
    if method == "deepbet" and not deepbet_available():
        log.warning("deepbet_missing_falling_back_to_template", model_dir=str(MODEL_DIR))
        method = "template"
    if method == "deepbet":
        return _deepbet(image, threshold)
    if method == "template":
        return _template_mask(image)
    raise ValueError(f"unknown brain extraction method {method!r} (deepbet, template)")


# ---------------------------------------------------------------------------------------------------------------------
# deepbet


@lru_cache(maxsize=1)
def _sessions() -> tuple[Any, Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("RADNODE_ORT_THREADS", "0") or 0) or min(4, os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    prov = ["CPUExecutionProvider"]
    return (
        ort.InferenceSession(str(BBOX_MODEL), so, providers=prov),
        ort.InferenceSession(str(MASK_MODEL), so, providers=prov),
    )


def _resize_nearest_exact(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``torch.nn.functional.interpolate(mode="nearest-exact")`` for 3-D arrays."""
    idx = [
        np.minimum(np.floor((np.arange(o, dtype=np.float64) + 0.5) * (i / o)).astype(np.int64), i - 1)
        for i, o in zip(x.shape, shape)
    ]
    return x[np.ix_(*idx)]


def _normalize(x: np.ndarray, low: float, high: float) -> np.ndarray:
    # float32 throughout (16 M voxels at 256³: float64 temporaries would cost ~1 s)
    x = np.clip((x - np.float32(low)) / np.float32(max(high - low, 1e-12)), 0.0, 1.0, dtype=np.float32)
    mean, std = float(x.mean(dtype=np.float64)), float(x.std(ddof=1, dtype=np.float64))
    x -= np.float32(mean)
    x *= np.float32(0.226 / max(std, 1e-12))
    x += np.float32(0.449)
    return x


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))  # cc3d's default 26-connectivity
    if n == 0:
        raise AnalyzerError("brain extraction found no brain (is this a T1-weighted head image?)")
    if n == 1:
        return labels > 0
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == counts.argmax()


def _bbox_with_margin(mask_small: np.ndarray, shape: tuple[int, ...], margin: float = 0.1) -> tuple[slice, ...]:
    out = []
    for axis, full in enumerate(shape):
        other = tuple(a for a in range(3) if a != axis)
        r = np.where(mask_small.mean(axis=other) > 0.02)[0]
        if r.size == 0:
            raise AnalyzerError("brain extraction: not enough foreground for a bounding box")
        scale = full / mask_small.shape[axis]
        center = scale * (r.max() + 1 + r.min()) / 2
        size = (1 + 2 * margin) * scale * ((r.max() + 1) - r.min())
        center, size = np.round(np.float32(center)), np.round(np.float32(size))
        out.append(slice(max(0, int(center - size / 2)), min(full, int(center + size / 2)), 1))
    return tuple(out)


def _run_deepbet_array(x: np.ndarray, small_shape: tuple[int, int, int] = (128, 128, 128),
                       shape: tuple[int, int, int] = (256, 256, 256)) -> np.ndarray:
    """deepbet's ``run_model`` + ``postprocess`` on a closest-canonical RAS array → bool mask."""
    bbox_sess, mask_sess = _sessions()
    x = np.nan_to_num(x.astype(np.float32))
    x_small = _resize_nearest_exact(x, small_shape)
    low, high = np.quantile(x_small, [0.005, 0.995])
    with _lock:  # sessions are thread-safe, but two 256³ runs at once would only thrash 2 cores
        p_small = bbox_sess.run(None, {"image": _normalize(x_small, low, high)[None, None]})[0][0, 1]
    mask_small = _largest_component(p_small > 0.5).astype(np.float32)
    bbox = _bbox_with_margin(mask_small, x.shape)
    crop = _resize_nearest_exact(x[bbox], shape)
    with _lock:
        p = mask_sess.run(None, {"image": _normalize(crop, low, high)[None, None]})[0][0, 1]
    mask = np.zeros(x.shape, bool)
    mask[bbox] = _resize_nearest_exact(p, x[bbox].shape) > 0.5
    sub = _largest_component(mask[bbox])
    mask[bbox] = ndimage.binary_fill_holes(sub)
    return mask


def _deepbet(image: sitk.Image, threshold: float = 0.5) -> sitk.Image:
    orig_code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    # DICOMOrient(img, "RAS") yields direction diag(-1, -1, 1) in LPS, i.e. nibabel's closest-canonical RAS+.
    ras = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "RAS")
    arr = sitk.GetArrayViewFromImage(ras).transpose(2, 1, 0)  # (x=R, y=A, z=S) like nib.as_closest_canonical
    mask = _run_deepbet_array(np.array(arr))
    out = sitk.GetImageFromArray(mask.transpose(2, 1, 0).astype(np.uint8))
    out.CopyInformation(ras)
    out = sitk.DICOMOrient(out, orig_code)
    out.CopyInformation(image)  # identical grid up to rounding of the direction cosines
    log.info("brain_extracted", method="deepbet", volume_ml=_volume_ml(out))
    return out


def _volume_ml(mask: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(mask).sum() * np.prod(mask.GetSpacing()) / 1000.0)


# ---------------------------------------------------------------------------------------------------------------------
# template fallback


def _nilearn_dir() -> Path | None:
    try:
        import nilearn.datasets
    except ImportError:
        return None
    d = Path(nilearn.datasets.__file__).parent / "data"
    return d if all((d / f).is_file() for f in _NILEARN_FILES) else None


@lru_cache(maxsize=1)
def mni152_brain_mask() -> sitk.Image:
    """nilearn's MNI152 2009a brain mask (GM + WM > 0.2, closed, holes filled) as float32 on its grid, LPS.

    One definition for every user: template brain extraction (when Colin27 is
    not installed) and the metastasis brain frame register to it. Cached; do
    not modify the returned image.
    """
    d = _nilearn_dir()
    if d is None:
        raise AnalyzerError("nilearn's MNI152 template files are missing (install nilearn)")
    gm = sitk.ReadImage(str(d / _NILEARN_FILES[1]), sitk.sitkFloat32)
    wm = sitk.ReadImage(str(d / _NILEARN_FILES[2]), sitk.sitkFloat32)
    return _closed_mask(sitk.GetArrayFromImage(gm) + sitk.GetArrayFromImage(wm) > 0.2, gm)


def _closed_mask(mask: np.ndarray, grid: sitk.Image) -> sitk.Image:
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    image = sitk.GetImageFromArray(filled.astype(np.float32))
    image.CopyInformation(grid)
    return image


@lru_cache(maxsize=1)
def _template() -> tuple[sitk.Image, sitk.Image, str]:
    """(template T1, brain mask, name). Colin27 with skull when installed (better MI with a head), else MNI 2009a."""
    if (_MRICRON / "ch2.nii.gz").is_file() and (_MRICRON / "ch2bet.nii.gz").is_file():
        t1 = sitk.ReadImage(str(_MRICRON / "ch2.nii.gz"), sitk.sitkFloat32)
        bet = sitk.ReadImage(str(_MRICRON / "ch2bet.nii.gz"), sitk.sitkFloat32)
        return t1, _closed_mask(sitk.GetArrayFromImage(bet) > 0, t1), "colin27"
    d = _nilearn_dir()
    if d is None:
        raise AnalyzerError("no brain template available (install nilearn or mricron-data)")
    t1 = sitk.ReadImage(str(d / _NILEARN_FILES[0]), sitk.sitkFloat32)
    return t1, mni152_brain_mask(), "mni152_2009a"


def _template_mask(image: sitk.Image) -> sitk.Image:
    t1, mask, name = _template()
    fixed = sitk.Cast(image, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(
        fixed, t1, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    rigid = _register(fixed, t1, init)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine = _register(fixed, t1, affine)
    warped = sitk.Resample(mask, fixed, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out = sitk.Cast(warped > 0.5, sitk.sitkUInt8)
    out.CopyInformation(image)
    log.info("brain_extracted", method="template", template=name, volume_ml=_volume_ml(out))
    return out


def _register(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform) -> Any:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=100, relaxationFactor=0.6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2, 1])
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    return out.Downcast() if hasattr(out, "Downcast") else out
