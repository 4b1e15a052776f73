"""Is a released study whole enough to start? The signal side of study completeness.

The quiet period (10 s by default) is the fallback every DICOM node uses; users' most common complaint about
AI nodes is that timer. When the sender releases its association, the study is *probably* complete — if the
series the routed applications need are there and whole: for a classic series, slice positions along the
slice normal with no gap and at least :data:`MIN_SLICES`; for an enhanced multi-frame object, its frames. A
study that fails any test keeps waiting for the quiet period, so this can only make a start earlier, never
make it incomplete in a way the timer would not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.tag import Tag

from radnode.model.geometry import numeric_vector

#: Fewer slices than this is not a volume an application can use.
MIN_SLICES = 3
#: A step between neighbouring slice positions larger than this times the usual step is a gap.
GAP_FACTOR = 1.5

_GEOMETRY_TAGS = [Tag(0x0020, 0x0032), Tag(0x0020, 0x0037)]  # ImagePositionPatient, ImageOrientationPatient


@dataclass(frozen=True)
class Wholeness:
    whole: bool
    detail: str


def _floats(value: Any, n: int) -> list[float] | None:
    try:
        return list(numeric_vector(value, n))
    except ValueError:
        return None


def series_wholeness(paths: Iterable[Path], header: Any) -> Wholeness:
    """Whether one series' files form a whole volume (see the module docstring)."""
    paths = list(paths)
    frames = header.get("NumberOfFrames") if header is not None else None
    try:
        n_frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames > 1:
        # One enhanced object carries the whole acquisition: it arrives whole or not at all.
        return Wholeness(n_frames >= MIN_SLICES, f"{n_frames} frames in {len(paths)} object(s)")
    positions: list[list[float]] = []
    normal: np.ndarray | None = None
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_GEOMETRY_TAGS)
        except Exception:  # an unreadable file cannot count as a slice
            continue
        ipp = _floats(ds.get("ImagePositionPatient"), 3)
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
        if ipp is None or iop is None:
            continue
        if normal is None:
            normal = np.cross(iop[:3], iop[3:])
        positions.append(ipp)
    if normal is None or len(positions) < MIN_SLICES:
        return Wholeness(False, f"{len(positions)} slices with a position (need {MIN_SLICES})")
    along = np.unique(np.round(np.asarray(positions) @ normal, 3))
    if len(along) < MIN_SLICES:
        return Wholeness(False, f"{len(along)} distinct slice positions (need {MIN_SLICES})")
    steps = np.diff(along)
    usual = float(np.median(steps))
    worst = float(steps.max())
    if usual <= 0 or worst > GAP_FACTOR * usual:
        return Wholeness(False, f"gap of {worst:.1f} mm between slices spaced {usual:.1f} mm")
    expected = header.get("ImagesInAcquisition") if header is not None else None
    try:
        if expected not in (None, "") and int(expected) > len(along):
            return Wholeness(False, f"{len(along)} of {int(expected)} images in acquisition")
    except (TypeError, ValueError):
        pass
    return Wholeness(True, f"{len(along)} contiguous slices")


def release_readiness(plan: Any) -> str | None:
    """The reason a planned study may start now, or None to wait for the quiet period.

    *plan* is the router's :class:`~radnode.routing.router.StudyPlan` for the study as it is in the spool.
    """
    if not plan.applications:
        return None  # nothing routed yet: more may be coming that a rule would match
    by_uid = {s.series_instance_uid: s for s in plan.summaries}
    parts = []
    for app in plan.applications:
        if not app.application.complete_on_release or not app.selection.complete:
            return None
        roles = []
        for role, chosen in app.selection.chosen.items():
            summary = by_uid.get(chosen.series_instance_uid)
            if summary is None:
                return None
            wholeness = series_wholeness(summary.paths, summary.header)
            if not wholeness.whole:
                return None
            roles.append(f"{role} {wholeness.detail}")
        parts.append(f"{app.application.name}: " + ", ".join(roles))
    return "association released; " + "; ".join(parts)
