"""Key images that show a RANO measurement: the axial slab of the longest
diameter, resampled from the reference series in patient axes, with the
segmentation overlay and both diameters drawn.

Why a reformat: the reference series is often a sagittal 3D T1c, while RANO
diameters are axial (patient x-y); the picture must show the plane the
numbers were measured in. Display follows the radiological convention
(patient's right on the image's left, anterior up).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from radnode.model.analysis import Segment
from radnode.model.lesions import Lesion
from radnode.sr_writer.pdf import KeyImage, _overlay_rgb

#: Half the field of view around the lesion (mm) and the pixel size of the reformat.
HALF_FOV_MM = 55.0
PIXEL_MM = 0.5


def series_image(sources: Sequence[Dataset], array: np.ndarray) -> sitk.Image:
    """*array* (Z, Y, X in sorted-source order) as an image in the series' patient geometry."""
    first = sources[0]
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dr, dc = (float(v) for v in first.PixelSpacing)
    if len(sources) > 1:
        pos = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in sources]
        dz = float(np.median(np.diff(pos)))
    else:
        dz = float(getattr(first, "SliceThickness", 1.0) or 1.0)
    if dz < 0:  # stored from high to low along the normal: flip the normal instead
        normal, dz = -normal, -dz
    img = sitk.GetImageFromArray(array)
    img.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    img.SetSpacing((dc, dr, dz))
    img.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return img


def render_bidimensional(volume: sitk.Image, labels: sitk.Image, segments: Sequence[Segment], lesion: Lesion,
                         *, size_px: int = 512) -> KeyImage:
    """The axial key image of *lesion*'s RANO measurement (which must exist)."""
    bi = lesion.bidimensional
    if bi is None:
        raise ValueError("lesion: has no bidimensional measurement")
    cx, cy = (np.asarray(bi.long_axis[0][:2]) + np.asarray(bi.long_axis[1][:2])) / 2
    n = int(2 * HALF_FOV_MM / PIXEL_MM)
    ref = sitk.Image([n, n, 1], sitk.sitkFloat32)
    origin = (cx - HALF_FOV_MM, cy - HALF_FOV_MM, bi.slab_z_mm)
    ref.SetOrigin(origin)
    ref.SetSpacing((PIXEL_MM, PIXEL_MM, 1.0))
    ref.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # x → patient left (image right), y → posterior (image down)
    gray = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(volume, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0.0))[0]
    lab = sitk.GetArrayFromImage(sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))[0]
    vals = gray[gray > 0]
    lo, hi = (float(v) for v in np.percentile(vals, [1, 99.5])) if vals.size else (0.0, 1.0)
    rgb = _overlay_rgb(gray, lab, segments, lo, hi)
    fig = plt.figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(rgb, interpolation="nearest")

    def px(p: tuple[float, float, float]) -> tuple[float, float]:
        return (p[0] - origin[0]) / PIXEL_MM, (p[1] - origin[1]) / PIXEL_MM

    for (a, b), colour, text in ((bi.long_axis, "#ffff00", f"{bi.longest_mm:.1f} mm"),
                                 (bi.perpendicular, "#00ffff", f"{bi.perpendicular_mm:.1f} mm")):
        (x0, y0), (x1, y1) = px(a), px(b)
        ax.plot([x0, x1], [y0, y1], color=colour, linewidth=2)
        ax.plot([x0, x1], [y0, y1], "o", color=colour, markersize=3)
        ax.text(x1 + 4, y1, text, color=colour, fontsize=11, fontweight="bold")
    ax.text(6, 18, "R", color="white", fontsize=12)
    ax.text(n - 18, 18, "L", color="white", fontsize=12)
    ax.set_xlim(0, n - 1)
    ax.set_ylim(n - 1, 0)
    ax.set_axis_off()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    title = (f"Lesion {lesion.index} RANO: {bi.longest_mm:.1f} x {bi.perpendicular_mm:.1f} mm "
             f"(axial, z = {bi.slab_z_mm:.0f} mm)")
    return KeyImage(title=title, rgb=pixels, png=buf.getvalue())
