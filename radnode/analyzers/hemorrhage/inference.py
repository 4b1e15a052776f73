"""Running a slice model over a head CT: neighbour stacks in, a label map and per-slice probabilities out.

The model contract (``task: slice-classification-segmentation``): slice *m* is
fed with its neighbours ``m − c … m + c``, offset-major (every window of
offset −c, then of −c + 1, …), each window mapped to [0, 1]; a missing
neighbour at either end of the stack is the edge slice itself (replicate
padding, as ``np.pad(mode="edge")``). Slices go through in batches so memory
stays bounded (a 512² grid × 9 channels is 9 MB a slice) and only the
arg-max label map is kept, not the per-label probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from radnode.analyzers.runtime import LoadedModel, ModelError, sigmoid, softmax
from radnode.analyzers.runtime.manifests import SLICE_CLASS_OUTPUT, SLICE_SEG_OUTPUT


def neighbour_indices(n_slices: int, m: int, context: int) -> list[int]:
    """Slice indices fed with slice *m*: ``m − c … m + c``, clipped to the stack (edge replicate)."""
    return [min(max(m + o, 0), n_slices - 1) for o in range(-context, context + 1)]


def context_batches(windows: np.ndarray, context: int, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first slice, [n, W × (2c + 1), H, X])`` batches from windowed slices ``(Z, W, H, X)``."""
    if windows.ndim != 4:
        raise ValueError(f"windows: expected (slices, windows, rows, columns), got shape {windows.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
    z = windows.shape[0]
    for first in range(0, z, batch_size):
        stop = min(first + batch_size, z)
        batch = np.stack([windows[neighbour_indices(z, m, context)].reshape(-1, *windows.shape[2:])
                          for m in range(first, stop)])
        yield first, np.ascontiguousarray(batch, dtype=np.float32)


class SliceAnswer(NamedTuple):
    """What a slice model says about a stack: the arg-max label map, its slice probabilities, the bleed area."""

    #: Manifest label values, ``(Z, H, X)`` uint8 (arg-max over ``seg_logits``).
    labels: np.ndarray
    #: Sigmoid of ``slice_logits``, ``(Z, S)`` in ``ct.slice_outputs`` order.
    probabilities: np.ndarray
    #: Per slice, the expected number of bleed pixels inside the mask given to :func:`infer_slices`
    #: (:func:`bleed_area`), ``(Z,)`` float64; None when no mask was given (the reading does not use it).
    bleed_area: np.ndarray | None


def infer_slices(model: LoadedModel, windows: np.ndarray, *, batch_size: int = 8,
                 inside: np.ndarray | None = None) -> SliceAnswer:
    """Run *model* over every slice: labels, slice probabilities and the soft bleed area (:class:`SliceAnswer`).

    Why the soft area: a count of arg-max pixels is 0 on most slices, so slices
    the model half-sees rank level with clean ones; the softmax mass inside
    *inside* (the intracranial mask, ``(Z, H, X)`` bool) keeps that ranking
    without keeping the per-label probabilities (only one number per slice).
    Without *inside* no softmax is computed (a reading that does not ask for it).
    """
    m = model.manifest
    ct = m.ct
    if ct is None:
        raise ModelError(f"model {m.name} {m.version}: not a slice model (no ct: block)")
    if not np.isfinite(windows).all():
        raise ModelError(f"model {m.name} {m.version}: input contains NaN or infinite values (check the preprocessing)")
    if model.max_batch is not None:
        batch_size = min(batch_size, model.max_batch)
    values = m.label_values
    z, _, h, w = windows.shape
    if inside is not None and inside.shape != (z, h, w):
        raise ValueError(f"inside: expected a mask of shape {(z, h, w)}, got {inside.shape}")
    background = np.flatnonzero(values == 0)
    labels = np.zeros((z, h, w), dtype=np.uint8)
    probs = np.zeros((z, len(ct.slice_outputs)), dtype=np.float32)
    area = np.zeros(z, dtype=np.float64) if inside is not None and background.size else None
    for first, batch in context_batches(windows, ct.context_slices, batch_size):
        out = model.run_outputs(batch, (SLICE_SEG_OUTPUT, SLICE_CLASS_OUTPUT))
        seg, cls = out[SLICE_SEG_OUTPUT], out[SLICE_CLASS_OUTPUT]
        n = batch.shape[0]
        if seg.shape != (n, len(values), h, w) or cls.shape != (n, len(ct.slice_outputs)):
            raise ModelError(f"model {m.name} {m.version}: returned {SLICE_SEG_OUTPUT} {list(seg.shape)} and "
                             f"{SLICE_CLASS_OUTPUT} {list(cls.shape)} for {n} slices of {h}x{w}; expected "
                             f"[{n}, {len(values)}, {h}, {w}] and [{n}, {len(ct.slice_outputs)}]")
        labels[first:first + n] = values[np.argmax(seg, axis=1)]
        probs[first:first + n] = sigmoid(cls)
        if area is not None:
            area[first:first + n] = bleed_area(seg, int(background[0]), inside[first:first + n])  # type: ignore[index]
    return SliceAnswer(labels, probs, area)


def bleed_area(seg_logits: np.ndarray, background: int, inside: np.ndarray | None = None) -> np.ndarray:
    """Per slice, the sum of 1 − P(*background*) of ``(N, C, H, X)`` logits over *inside* (every pixel without it)."""
    bleed = 1.0 - softmax(seg_logits, axis=1)[:, background]
    if inside is not None:
        bleed = bleed * inside
    return bleed.sum(axis=(1, 2), dtype=np.float64)


#: Pixels of a label in a slice at which a ``masked-segmentation`` slice probability is 0.5.
AREA_AT_HALF_PX = 4.0


def slice_probabilities_from_labels(labels: np.ndarray, outputs: Sequence[int | None]) -> np.ndarray:
    """``(Z, S)`` slice probabilities recomputed from an arg-max label map ``(Z, H, X)``.

    *outputs* gives, per slice output in order, its label value, or None for
    "any" (every non-zero label). Probability ``sigmoid(2·(ln(a + 0.5) − ln 4))``
    of the label's pixel count *a*: the function a ``masked-segmentation`` model
    bakes into its ``slice_logits`` (0.5 at 3.5 pixels, 0.94 at 16).
    """
    if labels.ndim != 3:
        raise ValueError(f"labels: expected (slices, rows, columns), got shape {labels.shape}")
    counts = []
    for value in outputs:
        region = labels > 0 if value is None else labels == value
        counts.append(region.sum(axis=(1, 2)))
    return area_probability(np.stack(counts, axis=1))


def area_probability(area: np.ndarray) -> np.ndarray:
    """``sigmoid(2·(ln(a + 0.5) − ln 4))`` of a pixel area *a* (count or expected count), float32."""
    a = np.asarray(area, dtype=np.float64)
    return sigmoid(2.0 * (np.log(a + 0.5) - np.log(AREA_AT_HALF_PX))).astype(np.float32)


def with_neighbours(column: np.ndarray, share: float) -> np.ndarray:
    """Each slice's probability raised to at least *share* × its higher neighbour's (``(Z,)``; share 0: unchanged).

    Why: a thick slab beside a bleeding slab often holds the bleed's edge by
    partial volume, too thin for a pixel of its own on the model grid; with
    *share* below the study threshold a neighbour alone never makes a slice
    positive evidence, it only ranks it above slices far from any bleed.
    """
    if share <= 0.0 or column.size < 2:
        return column
    neighbour = np.zeros_like(column)
    neighbour[1:] = column[:-1]
    neighbour[:-1] = np.maximum(neighbour[:-1], column[1:])
    return np.maximum(column, share * neighbour).astype(column.dtype)


def read_inside(labels: np.ndarray, mask: np.ndarray, merge_share: float,
                outputs: Sequence[int | None], *, any_area: np.ndarray | None = None,
                neighbour_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A ``masked-segmentation`` model's answer read inside the intracranial *mask*: ``(labels, slice probabilities)``.

    Bleed labels outside the mask are dropped, minor labels of a bleed region
    merged (:func:`merge_minor_labels`), and the slice probabilities recomputed
    from what remains (:func:`slice_probabilities_from_labels`, *outputs* in
    slice-output order). With *any_area* (``SliceAnswer.bleed_area`` inside
    the same mask) the "any" output (``None`` in *outputs*) comes from that
    expected area instead of the arg-max count, then takes its neighbours into
    account (:func:`with_neighbours`). The analyzer and
    ``bench/hemorrhage_model.py`` read the model through this one function.
    """
    kept = merge_minor_labels(np.where(mask, labels, 0).astype(np.uint8), merge_share)
    probs = slice_probabilities_from_labels(kept, outputs)
    if any_area is not None:
        for j, value in enumerate(outputs):
            if value is None:
                probs[:, j] = with_neighbours(area_probability(any_area), neighbour_share)
    return kept, probs


def merge_minor_labels(labels: np.ndarray, share: float) -> np.ndarray:
    """Relabel, per 26-connected non-zero region, every label below *share* of its voxels to the region's majority.

    Why: a slice model that sees a bleed touching the inner table may call its
    rim another subtype (a subdural fringe on an intraparenchymal haematoma);
    counted at study level that is a false subtype. ``share`` 0 returns the map unchanged.
    """
    if share <= 0.0 or not labels.any():
        return labels
    from scipy import ndimage

    out = labels.copy()
    regions, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), dtype=bool))
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        if box is None:
            continue
        inside = regions[box] == index
        values = labels[box][inside]
        counts = np.bincount(values, minlength=int(values.max()) + 1)
        counts[0] = 0
        majority = int(np.argmax(counts))
        minor = [v for v in np.nonzero(counts)[0] if v != majority and counts[v] < share * counts.sum()]
        if minor:
            view = out[box]
            view[inside & np.isin(labels[box], minor)] = majority
    return out


def window_stack(hu: np.ndarray, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """HU ``(Z, H, X)`` → ``(Z, W, H, X)`` float32: each (centre, width) window mapped to [0, 1]."""
    hu = np.asarray(hu, dtype=np.float32)
    out = np.empty((hu.shape[0], len(windows), *hu.shape[1:]), dtype=np.float32)
    for i, (centre, width) in enumerate(windows):
        lo = np.float32(centre - width / 2.0)
        np.clip((hu - lo) / np.float32(width), 0.0, 1.0, out=out[:, i])
    return out
