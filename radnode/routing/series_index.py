"""Index a folder of DICOM files into one summary per series.

Why: the series classifier and the selection of series for an application
only need headers, and they need them per *series*, not per file. Reading
pixel data of a few thousand files would cost seconds to minutes; reading a
handful of tags per file costs milliseconds. So every file is read with
``specific_tags`` (only the UIDs and numbers needed to group it) and only the
first instance of each series is read in full (still without pixels) to
become the series' ``header``.

The walker accepts any layout: radnode's spool
(``spool/<study>/<series>/<sop>.dcm``), a flat folder of ``.dcm`` files or
files without an extension. Files that are not DICOM, are truncated or lack
a SeriesInstanceUID are skipped with a warning; scanning never raises for bad
files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import structlog
from pydicom.dataset import Dataset
from pydicom.tag import Tag

log = structlog.get_logger(__name__)

#: Tags read from every file: enough to group it and order it in its series.
_GROUPING_TAGS = [
    Tag(0x0020, 0x000D),  # StudyInstanceUID
    Tag(0x0020, 0x000E),  # SeriesInstanceUID
    Tag(0x0020, 0x0011),  # SeriesNumber
    Tag(0x0020, 0x0013),  # InstanceNumber
    Tag(0x0028, 0x0008),  # NumberOfFrames (enhanced multi-frame objects)
]

#: File names that are never instances of a series.
_SKIP_NAMES = frozenset({"DICOMDIR", "LOCKFILE", "VERSION", ".DS_Store"})
#: Extensions that are certainly not DICOM; saves opening them.
_SKIP_SUFFIXES = frozenset(
    {".json", ".txt", ".csv", ".log", ".xml", ".html", ".png", ".jpg", ".jpeg", ".nii", ".gz", ".zip", ".py", ".md", ".db", ".sqlite", ".tmp", ".part"}
)


def _text(value: Any) -> str:
    """Return a header value as a stripped string; ``""`` for missing values."""
    if value is None:
        return ""
    try:
        return str(value).strip()
    except Exception:  # pragma: no cover - pydicom values always have str()
        return ""


def _int_or_none(value: Any) -> int | None:
    """Parse an IS-like value; nonsense becomes ``None`` rather than an error."""
    if value is None or value == "":
        return None
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, eq=False)
class SeriesSummary:
    """What radnode knows about one series before reading any pixel.

    ``header`` is the dataset of the series' first instance (lowest
    InstanceNumber, then path), read with ``stop_before_pixels``; features for
    the classifier are computed from it. ``instance_count`` counts files (or
    frames, for a single enhanced multi-frame object).
    """

    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    series_description: str
    modality: str
    instance_count: int
    header: Dataset = field(repr=False)
    paths: tuple[Path, ...] = field(default=(), repr=False)

    @classmethod
    def from_header(
        cls,
        header: Dataset,
        instance_count: int | None = None,
        paths: Iterable[Path] = (),
    ) -> SeriesSummary:
        """Build a summary from a header alone (used by the synthetic corpus and tests).

        Without ``instance_count`` the header's ImagesInAcquisition or
        NumberOfFrames is used, else 1.
        """
        count = instance_count
        if count is None:
            count = _int_or_none(header.get("ImagesInAcquisition")) or _int_or_none(header.get("NumberOfFrames")) or 1
        return cls(
            study_instance_uid=_text(header.get("StudyInstanceUID")),
            series_instance_uid=_text(header.get("SeriesInstanceUID")),
            series_number=_int_or_none(header.get("SeriesNumber")),
            series_description=_text(header.get("SeriesDescription")),
            modality=_text(header.get("Modality")),
            instance_count=max(int(count), 0),
            header=header,
            paths=tuple(paths),
        )

    @property
    def sort_key(self) -> tuple[int, int, str]:
        """Order by series number; series without a number go last."""
        number = self.series_number
        return (0 if number is not None else 1, number if number is not None else 0, self.series_instance_uid)


def _iter_candidate_files(root: Path) -> Iterator[Path]:
    """Yield every regular file under ``root`` that might be DICOM, in a stable order."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda err: log.warning("scan_walk_error", error=str(err))):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name in _SKIP_NAMES or name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in _SKIP_SUFFIXES:
                continue
            yield path


@dataclass
class _SeriesAccumulator:
    study_uid: str
    series_number: int | None
    count: int = 0
    # (instance number or a large sentinel, path) of each file
    members: list[tuple[int, Path]] = field(default_factory=list)


def scan_series(root: Path) -> list[SeriesSummary]:
    """Walk ``root`` and return one :class:`SeriesSummary` per series, sorted by series number.

    Unreadable or non-DICOM files are skipped with a warning. A missing
    ``root`` yields an empty list (with a warning) rather than an exception,
    because a caller polling a spool folder must not crash on a race.
    """
    root = Path(root)
    if not root.exists():
        log.warning("scan_root_missing", root=str(root))
        return []
    series: dict[str, _SeriesAccumulator] = {}
    skipped = 0
    for path in _iter_candidate_files(root):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_GROUPING_TAGS)
        except Exception as exc:  # any parse failure means "not usable", never a crash
            skipped += 1
            log.warning("scan_unreadable_file", path=str(path), error=type(exc).__name__)
            continue
        series_uid = _text(ds.get("SeriesInstanceUID"))
        if not series_uid:
            skipped += 1
            log.warning("scan_file_without_series_uid", path=str(path))
            continue
        acc = series.get(series_uid)
        if acc is None:
            acc = _SeriesAccumulator(study_uid=_text(ds.get("StudyInstanceUID")), series_number=_int_or_none(ds.get("SeriesNumber")))
            series[series_uid] = acc
        frames = _int_or_none(ds.get("NumberOfFrames")) or 1
        acc.count += max(frames, 1)
        instance = _int_or_none(ds.get("InstanceNumber"))
        acc.members.append((instance if instance is not None else 2**31, path))

    summaries: list[SeriesSummary] = []
    for series_uid, acc in series.items():
        members = sorted(acc.members, key=lambda m: (m[0], str(m[1])))
        header: Dataset | None = None
        for _, path in members:  # first readable member becomes the header
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                break
            except Exception as exc:
                log.warning("scan_header_unreadable", path=str(path), error=type(exc).__name__)
        if header is None:
            continue
        summaries.append(
            SeriesSummary(
                study_instance_uid=acc.study_uid or _text(header.get("StudyInstanceUID")),
                series_instance_uid=series_uid,
                series_number=acc.series_number,
                series_description=_text(header.get("SeriesDescription")),
                modality=_text(header.get("Modality")),
                instance_count=acc.count,
                header=header,
                paths=tuple(p for _, p in members),
            )
        )
    summaries.sort(key=lambda s: s.sort_key)
    log.info("scan_series_done", root=str(root), series=len(summaries), skipped=skipped)
    return summaries
