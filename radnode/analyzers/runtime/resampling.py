"""Move images between the acquisition grid and the grid a model expects."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def resample_to_spacing(
    image: Any, spacing_xyz: Sequence[float], interpolator: int | None = None, default_value: float = 0.0
) -> Any:
    """Resample a ``sitk.Image`` onto a grid of *spacing_xyz* mm covering the same field of view.

    The new grid keeps the direction and the outer corner of the first
    voxel, so the volume's extent is preserved (no half-voxel shift) and
    ``resample_like`` can bring labels back onto the original grid. Linear
    interpolation by default; use ``sitk.sitkNearestNeighbor`` for labels.
    """
    import SimpleITK as sitk

    if interpolator is None:
        interpolator = sitk.sitkLinear
    spacing = [float(s) for s in spacing_xyz]
    if len(spacing) != image.GetDimension() or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be {image.GetDimension()} positive numbers, got {list(spacing_xyz)}")
    old_spacing = np.array(image.GetSpacing(), dtype=np.float64)
    old_size = np.array(image.GetSize(), dtype=np.float64)
    new_spacing = np.array(spacing)
    new_size = [max(1, int(round(n))) for n in old_size * old_spacing / new_spacing]
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(image.GetDimension(), -1)
    shift = direction @ ((new_spacing - old_spacing) / 2.0)
    origin = np.array(image.GetOrigin(), dtype=np.float64) + shift
    return sitk.Resample(
        image,
        new_size,
        sitk.Transform(),
        interpolator,
        [float(o) for o in origin],
        spacing,
        image.GetDirection(),
        default_value,
        image.GetPixelID(),
    )


def resample_like(image: Any, reference: Any, interpolator: int | None = None, default_value: float = 0.0) -> Any:
    """Resample *image* onto *reference*'s grid (e.g. model-space labels back to the acquisition).

    Nearest neighbour by default, since this usually carries label maps back.
    """
    import SimpleITK as sitk

    if interpolator is None:
        interpolator = sitk.sitkNearestNeighbor
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value, image.GetPixelID())


def read_model_grid(path: Any, orientation: str | None, spacing_xyz: Sequence[float]) -> Any:
    """A preprocessed image read onto the model's grid: its axis orientation (a manifest's
    ``orientation``, permutation/flip only) and *spacing_xyz*; float32."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    if orientation:
        image = sitk.DICOMOrient(image, orientation)
    return resample_to_spacing(image, spacing_xyz)


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of *mask* grown by *margin* voxels, clipped to the array (the part a model needs to see)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
