"""One small picture per lesion: a crop of the reference series (T1c) on the
lesion's centroid slice, the lesion outlined.

Why: a metastasis report lists many small lesions; a reader checks each
number against its lesion only if they can see which blob it is. The same
pixels go into the PDF's lesion table, the job page (PNG files next to the
results) and a secondary capture each, like the other key images.

The crop is in the series' own plane (no reformat: thumbnails must be cheap
and never resample a 2 mm lesion away), square in millimetres, at least
:data:`MIN_HALF_FOV_MM` around the lesion and wider for large ones.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from radnode.model.lesions import Lesion
from radnode.sr_writer.pdf import KeyImage

#: Smallest half field of view (mm) and how many diameters the field spans around the lesion.
MIN_HALF_FOV_MM = 15.0
FOV_DIAMETERS = 1.5
OUTLINE = "#ffd700"


def thumbnail_file(index: int) -> str:
    """The PNG's file name in the job's results folder (what the web page links to)."""
    return f"lesion_{int(index):03d}.png"


def _slice_of(mask: np.ndarray) -> int:
    """The centroid's slice when the lesion is on it (a crescent's may not be), else its largest slice."""
    zs = np.nonzero(mask)[0]
    centre = round(float(zs.mean()))
    if mask[centre].any():
        return centre
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


def render_lesion_thumbnail(volume: np.ndarray, label_map: np.ndarray, lesion: Lesion, track: int,
                            pixel_spacing: tuple[float, float], *, size_px: int = 192) -> KeyImage:
    """The thumbnail of the label map's lesion ``lesion.index`` (which must have voxels)."""
    if volume.shape != label_map.shape or volume.ndim != 3:
        raise ValueError("volume: must be 3-D (Z, Y, X) with the label map's shape")
    mask = label_map == lesion.index
    if not mask.any():
        raise ValueError(f"label_map: has no voxel of lesion {lesion.index}")
    dr, dc = (float(v) for v in pixel_spacing)
    z = _slice_of(mask)
    ys, xs = np.nonzero(mask[z])
    cy, cx = float(ys.mean()), float(xs.mean())
    half_mm = max(MIN_HALF_FOV_MM, FOV_DIAMETERS * float(lesion.max_axial_diameter_mm))
    hy, hx = int(np.ceil(half_mm / dr)), int(np.ceil(half_mm / dc))
    y0, y1 = round(cy) - hy, round(cy) + hy + 1
    x0, x1 = round(cx) - hx, round(cx) + hx + 1
    # Pad rather than shift the window, so the lesion stays centred at the image's edge.
    pad = max(0, -y0, -x0, y1 - volume.shape[1], x1 - volume.shape[2])
    gray = np.pad(volume[z].astype(float), pad, mode="constant")[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    lab = np.pad(mask[z], pad, mode="constant")[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    values = volume[z][volume[z] > 0]
    lo, hi = (float(v) for v in np.percentile(values, [1, 99.5])) if values.size else (0.0, 1.0)
    fig = plt.figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(gray, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=dr / dc, interpolation="nearest")
    ax.contour(lab.astype(float), levels=[0.5], colors=[OUTLINE], linewidths=1.2)
    ax.text(3, 12, f"L{track}", color=OUTLINE, fontsize=9, fontweight="bold")
    ax.set_axis_off()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    title = f"Lesion {track}: {lesion.location}, {lesion.max_axial_diameter_mm:.1f} mm (slice {z + 1})"
    return KeyImage(title=title, rgb=pixels, png=buf.getvalue())


def render_lesion_thumbnails(volume: np.ndarray, label_map: np.ndarray, lesions: Sequence[Lesion],
                             tracking: Mapping[int, tuple[int, str]], pixel_spacing: tuple[float, float]) -> dict[int, KeyImage]:
    """Lesion index → thumbnail, for every lesion that has voxels in the label map."""
    out: dict[int, KeyImage] = {}
    for les in sorted(lesions, key=lambda x: x.index):
        if np.any(label_map == les.index):
            out[les.index] = render_lesion_thumbnail(volume, label_map, les, tracking.get(les.index, (les.index, ""))[0], pixel_spacing)
    return out
