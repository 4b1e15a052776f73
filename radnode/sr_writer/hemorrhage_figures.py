"""Key-slice and probability-strip pictures for slice-based CT results (the haemorrhage application).

Why these and not the three orthogonal planes of :func:`radnode.sr_writer.pdf.render_key_images`:
a radiologist checks a haemorrhage call on the axial source slice, in the
windows that show each kind of blood — brain (40/80) for parenchymal and
subarachnoid blood, subdural (80/200) for a thin crescent against the skull,
bone (600/2800) for the fracture beside an epidural haematoma — with the
segmented bleed outlined rather than filled, so the density underneath stays
visible. The strip shows the classifier's per-slice probability of every label
against the slice position, the evidence behind each study-level call.

Pixels are the source slices themselves (stored values × Rescale Slope +
Intercept), so a gantry-tilted series is shown as acquired and the outline is
the SEG's own label map on that slice.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from radnode.model.analysis import KeySlice, Segment, SliceCurves  # noqa: E402
from radnode.sr_writer.frames import SourceFrame  # noqa: E402
from radnode.sr_writer.pdf import PALETTE, KeyImage  # noqa: E402

#: Colours of the strip's lines (matplotlib's default cycle is not colour-blind safe).
_LINE_COLOURS = ("#000000",) + tuple("#%02x%02x%02x" % c for c in PALETTE)


def _rescale(frame: SourceFrame) -> tuple[float, float]:
    """(slope, intercept) of one slice: top level, or the frame's / shared Pixel Value Transformation."""
    ds = frame.dataset
    if frame.frame_number is not None:
        for container in (ds.PerFrameFunctionalGroupsSequence[frame.frame_number - 1],
                          ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None):
            if container is not None and "PixelValueTransformationSequence" in container:
                item = container.PixelValueTransformationSequence[0]
                return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def slice_values(frame: SourceFrame) -> np.ndarray:
    """The modality values (HU for CT) of one source slice, float32."""
    pixels = np.asarray(frame.dataset.pixel_array)
    if frame.frame_number is not None and pixels.ndim == 3:
        pixels = pixels[frame.frame_number - 1]
    slope, intercept = _rescale(frame)
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _png_and_rgb(fig: plt.Figure) -> tuple[bytes, np.ndarray]:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buf.getvalue(), rgb


def render_key_slice(frame: SourceFrame, labels: np.ndarray, key: KeySlice, segments: Sequence[Segment],
                     *, panel_px: int = 320) -> KeyImage:
    """One source slice in each of ``key.windows``, side by side, with ``key.segment`` (or every segment) outlined.

    *labels* is that slice's label map ``(rows, columns)``; colours follow the
    order of *segments*, as in the PDF's overlay legend.
    """
    if not isinstance(key, KeySlice):
        raise TypeError(f"key: expected KeySlice, got {type(key).__name__}")
    if not key.windows:
        raise ValueError("key: needs at least one window")
    values = slice_values(frame)
    if labels.shape != values.shape:
        raise ValueError(f"labels: shape {labels.shape} does not match the slice {values.shape}")
    dr, dc = frame.spacing
    aspect = dr / dc
    rows, cols = values.shape
    height = panel_px * rows * aspect / cols
    n = len(key.windows)
    fig = plt.figure(figsize=(n * panel_px / 100, (height + 28) / 100), dpi=100)
    fig.patch.set_facecolor("black")
    outlined = [(i, s) for i, s in enumerate(segments) if key.segment in (None, s.name) and np.any(labels == s.value)]
    for j, (name, centre, width) in enumerate(key.windows):
        ax = fig.add_axes((j / n, 0, 1 / n, height / (height + 28)))
        lo, hi = centre - width / 2.0, centre + width / 2.0
        ax.imshow(values, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
        for i, s in outlined:
            colour = np.asarray(PALETTE[i % len(PALETTE)], dtype=float) / 255
            ax.contour((labels == s.value).astype(float), levels=[0.5], colors=[colour], linewidths=1.5)
        ax.set_axis_off()
        fig.text((j + 0.5) / n, 1 - 14 / (height + 28), f"{name} {centre:g}/{width:g}", color="white",
                 ha="center", va="center", fontsize=10)
    png, rgb = _png_and_rgb(fig)
    return KeyImage(title=key.title, rgb=rgb, png=png)


def render_slice_curves(curves: SliceCurves, *, width_px: int = 960, height_px: int = 320) -> KeyImage:
    """The per-slice probability strip: one line per label, slice number (1 = first analysed) on x."""
    if not isinstance(curves, SliceCurves):
        raise TypeError(f"curves: expected SliceCurves, got {type(curves).__name__}")
    values = np.asarray(curves.values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(curves.names) or len(values) == 0:
        raise ValueError(f"curves: values must be (slices, {len(curves.names)}), got shape {values.shape}")
    x = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(width_px / 100, height_px / 100), dpi=100)
    for j, name in enumerate(curves.names):
        ax.plot(x, values[:, j], label=name, color=_LINE_COLOURS[j % len(_LINE_COLOURS)],
                linewidth=2.0 if j == 0 else 1.3, marker="o" if len(x) <= 60 else None, markersize=2.5)
    for t in sorted(set(curves.thresholds)):
        ax.axhline(t, color="#888888", linestyle="--", linewidth=0.8)
    ax.set_xlim(0.5, len(x) + 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("slice")
    ax.set_ylabel("probability")
    ax.set_title(curves.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper left", frameon=False)
    fig.tight_layout()
    png, rgb = _png_and_rgb(fig)
    return KeyImage(title=curves.title, rgb=rgb, png=png)


def render_slice_figures(frames: Sequence[SourceFrame], label_map: np.ndarray, segments: Sequence[Segment],
                         key_slices: Sequence[KeySlice], curves: SliceCurves | None) -> list[KeyImage]:
    """Every key slice, then the strip: the key images of a slice-based result.

    *frames* are the reference series' slices in label-map order (sorted along
    the normal), *label_map* ``(Z, rows, columns)`` over them.
    """
    if label_map.shape[0] != len(frames):
        raise ValueError(f"label_map: {label_map.shape[0]} slices for {len(frames)} source slices")
    out = []
    for i, key in enumerate(key_slices):
        if not 0 <= key.index < len(frames):
            raise ValueError(f"key_slices: item {i} index {key.index} is outside the {len(frames)} source slices")
        out.append(render_key_slice(frames[key.index], label_map[key.index], key, segments))
    if curves is not None:
        out.append(render_slice_curves(curves))
    return out
