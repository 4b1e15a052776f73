"""A job's result objects on disk: the list a job page shows, one file by
name (never outside the job's folder), key images as PNG."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import structlog

from radnode.settings import Settings
from radnode.web.errors import ServiceError

log = structlog.get_logger(__name__)


def results_dir(settings: Settings, job_id: str) -> Path:
    """Where the result writer put a job's objects (``work_dir/<job>/results``)."""
    return settings.work_dir / job_id / "results"


#: Lesion thumbnails (``radnode.sr_writer.lesion_thumbnails.thumbnail_file``): shown in the lesion table, not as key images.
_THUMBNAIL = re.compile(r"^lesion_(\d+)\.png$")
#: Their secondary captures' titles ("Key image: Lesion <track>: <location>, ..."; glioma's "Lesion 1 RANO: ..." differ).
_THUMBNAIL_SC = re.compile(r"^Key image: Lesion \d+: ")


def result_files(settings: Settings, job_id: str) -> dict[str, Any]:
    """The report PDF, the key images (secondary captures, PNGs) and the lesion thumbnails the writer left for a job."""
    folder = results_dir(settings, job_id)
    out: dict[str, Any] = {"report_pdf": False, "key_images": [], "lesion_thumbnails": {}}
    if not folder.is_dir():
        return out
    out["report_pdf"] = (folder / "report.pdf").is_file()
    for path in sorted(folder.iterdir()):
        thumb = _THUMBNAIL.match(path.name)
        if thumb:
            out["lesion_thumbnails"][int(thumb.group(1))] = path.name
        elif path.suffix.lower() == ".png":
            out["key_images"].append({"name": path.name, "title": path.stem})
        elif path.name.startswith("sc_") and path.suffix == ".dcm":
            title = _sc_title(path)
            # The report is shown whole as the PDF, the lesion thumbnails in the lesion table.
            if not title.startswith("Report page") and not _THUMBNAIL_SC.match(title):
                out["key_images"].append({"name": path.name, "title": title})
    return out


def _sc_title(path: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImageComments"])
        return str(ds.get("ImageComments", path.stem))
    except Exception:  # noqa: BLE001 - a broken file still gets listed by name
        return path.stem


def result_file(settings: Settings, job_id: str, name: str) -> Path:
    """A file of the job's results folder by plain name (nothing outside it)."""
    folder = results_dir(settings, job_id).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise ServiceError(404, f"no result file {name!r}")
    return path


def key_image_png(path: Path) -> bytes:
    """A PNG of a key image: PNGs as they are, secondary captures rendered from their pixels."""
    if path.suffix.lower() == ".png":
        return path.read_bytes()
    import io

    import numpy as np
    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
