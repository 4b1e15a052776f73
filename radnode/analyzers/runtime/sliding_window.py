"""Sliding-window inference helpers: Gaussian importance weights (as nnU-Net),
window positions, padding, and the output activations."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)  # overflow-free form


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8, floor: float = 1e-4) -> np.ndarray:
    """Gaussian blending weights over a patch, peak 1 in the middle (nnU-Net's choice).

    Network predictions are least reliable near patch borders, where the
    receptive field runs into padding; weighting the centre up hides seams.
    Computed analytically about the exact centre (so it is symmetric for
    even sizes too) and floored so border voxels covered by one window only
    never divide by ~0.
    """
    axes = []
    for n in patch:
        sigma = max(n * sigma_scale, 1e-6)
        coords = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axes.append(np.exp(-0.5 * (coords / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w /= w.max()
    return np.maximum(w, floor).astype(np.float32)


def _window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering [0, size) with at least *overlap* (nnU-Net's rule)."""
    if size <= patch:
        return [0]
    target_step = max(1.0, patch * (1.0 - overlap))
    count = int(math.ceil((size - patch) / target_step)) + 1
    step = (size - patch) / (count - 1)
    return sorted({int(round(step * i)) for i in range(count)})


def _pad_to(
    channels: np.ndarray, patch: Sequence[int], values: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Pad (C, Z, Y, X) symmetrically up to *patch* where smaller; return the crop back."""
    shape = channels.shape[1:]
    if all(s >= q for s, q in zip(shape, patch)):
        return channels, (slice(None), slice(None), slice(None))
    before = [max(0, q - s) // 2 for s, q in zip(shape, patch)]
    new_shape = tuple(max(s, q) for s, q in zip(shape, patch))
    padded = np.empty((channels.shape[0], *new_shape), dtype=np.float32)
    padded[...] = values.reshape(-1, 1, 1, 1)
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
    padded[(slice(None), *crop)] = channels
    return padded, crop  # type: ignore[return-value]
