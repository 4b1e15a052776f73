"""Shape of a voxel set from its principal axes: tubes (vessels) and plates (dura) versus balls.

Why a module of its own: the model's candidates (:mod:`.candidates`) and the
small-lesion blobs (:mod:`.blobs`) are both judged by these numbers, and the
candidate step imports the blob detector.
"""

from __future__ import annotations

import numpy as np


def _axes_variances(points_zyx: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Variances along the principal axes (mm², largest first), each at least a voxel's own (1/12 of a
    voxel edge squared: a voxel grid has that variance per axis even for a line or a plane)."""
    pts = points_zyx * np.asarray(spacing_zyx, dtype=np.float64)
    ev = np.sort(np.linalg.eigvalsh(np.cov(pts, rowvar=False)))[::-1]
    return ev + min(spacing_zyx) ** 2 / 12.0


def elongation(points_zyx: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """sqrt(λ1/λ2) of the covariance of voxel positions in mm: ~1 for blobs, large for tubes."""
    if len(points_zyx) < 3:
        return 1.0
    ev = _axes_variances(points_zyx, spacing_zyx)
    return float(np.sqrt(ev[0] / ev[1]))


def flatness(points_zyx: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """sqrt(λ2/λ3) of the covariance of voxel positions in mm: ~1 for blobs and tubes, large for plates."""
    if len(points_zyx) < 4:
        return 1.0
    ev = _axes_variances(points_zyx, spacing_zyx)
    return float(np.sqrt(ev[1] / ev[2]))
