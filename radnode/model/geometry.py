"""Numbers from DICOM geometry attributes (ImagePositionPatient, ImageOrientationPatient, PixelSpacing).

Headers from the network may carry anything in these multi-valued strings; every reader of patient geometry
(volumes for the analyzers, source frames for the writers, the completeness check) parses them here.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def numeric_vector(value: Any, n: int) -> np.ndarray:
    """*value* as *n* floats; ValueError ("missing or not numeric" / "has k values, expected n") otherwise."""
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("is missing or not numeric") from exc
    if arr.shape != (n,):
        raise ValueError(f"has {arr.size} values, expected {n}")
    return arr
