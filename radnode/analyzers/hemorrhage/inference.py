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

import numpy as np

from radnode.analyzers.runtime import LoadedModel, ModelError, sigmoid
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


def infer_slices(model: LoadedModel, windows: np.ndarray, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Run *model* over every slice: ``(label values (Z, H, X) uint8, slice probabilities (Z, S))``.

    Label values are the manifest's (arg-max over ``seg_logits``, which is the
    arg-max of their softmax); slice probabilities are the sigmoid of
    ``slice_logits`` in ``ct.slice_outputs`` order.
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
    labels = np.zeros((z, h, w), dtype=np.uint8)
    probs = np.zeros((z, len(ct.slice_outputs)), dtype=np.float32)
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
    return labels, probs


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
    a = np.stack(counts, axis=1).astype(np.float64)
    return sigmoid(2.0 * (np.log(a + 0.5) - np.log(AREA_AT_HALF_PX))).astype(np.float32)


def read_inside(labels: np.ndarray, mask: np.ndarray, merge_share: float,
                outputs: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
    """A ``masked-segmentation`` model's answer read inside the intracranial *mask*: ``(labels, slice probabilities)``.

    Bleed labels outside the mask are dropped, minor labels of a bleed region
    merged (:func:`merge_minor_labels`), and the slice probabilities recomputed
    from what remains (:func:`slice_probabilities_from_labels`, *outputs* in
    slice-output order). The analyzer and ``bench/hemorrhage_model.py`` read
    the model through this one function.
    """
    kept = merge_minor_labels(np.where(mask, labels, 0).astype(np.uint8), merge_share)
    return kept, slice_probabilities_from_labels(kept, outputs)


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
