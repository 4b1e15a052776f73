"""Checks run on every object radnode writes, before it leaves the node.

A writer that produced an object the PACS cannot parse is worse than one
that failed: :func:`read_back` rereads the file under pydicom's strict
validation and touches every element, so value/VR problems surface here and
not in the PACS's error log. ``dciodvfy`` (dicom3tools) checks the IOD and
``dsrdump`` (DCMTK) checks an SR is readable by a second implementation.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pydicom.config
import structlog
from pydicom.dataset import Dataset

log = structlog.get_logger(__name__)

#: Absolute paths first: PATH in service containers is not to be trusted.
_DCIODVFY = ("/usr/bin/dciodvfy",)
_DSRDUMP = ("/usr/bin/dsrdump",)


def _tool(candidates: tuple[str, ...], name: str) -> str | None:
    for c in candidates:
        if Path(c).is_file():
            return c
    return shutil.which(name)


def read_back(path: str | Path) -> Dataset:
    """Read *path* with strict validation, decoding every element.

    Raises whatever pydicom raises (``InvalidDicomError``, ``ValueError``)
    for an unreadable or invalid object.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: {p} does not exist")
    old = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        ds = pydicom.dcmread(p, force=False)
        for elem in ds.iterall():  # values are converted (and validated) lazily
            _ = elem.value
        if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed:
            _ = ds.pixel_array  # the pixel description and the data agree
    finally:
        pydicom.config.settings.reading_validation_mode = old
    return ds


def dciodvfy(path: str | Path) -> list[str] | None:
    """The ``Error -`` lines dciodvfy reports for *path*; None if not installed."""
    tool = _tool(_DCIODVFY, "dciodvfy")
    if tool is None:
        log.warning("dciodvfy not installed; IOD check skipped")
        return None
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (proc.stdout + "\n" + proc.stderr).splitlines()
    errors = [line.strip() for line in lines if line.strip().startswith("Error -")]
    if proc.returncode != 0 and not errors:
        errors = [f"Error - dciodvfy exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:500]}"]
    return errors


def dciodvfy_report(path: str | Path) -> tuple[list[str], list[str]] | None:
    """(errors, warnings) dciodvfy reports for *path*; None if not installed.

    Warnings matter too: a PACS or viewer that is stricter than the standard's
    minimum trips on exactly what dciodvfy warns about (empty type 2C values,
    unexpected attributes, retired codes).
    """
    tool = _tool(_DCIODVFY, "dciodvfy")
    if tool is None:
        log.warning("dciodvfy not installed; IOD check skipped")
        return None
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace", timeout=120, check=False)
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines()]
    return [x for x in lines if x.startswith("Error -")], [x for x in lines if x.startswith("Warning -")]


def dcentvfy(paths: list[Path]) -> list[str] | None:
    """dicom3tools ``dcentvfy`` over a set of files (e.g. a study's sources
    and results): the lines reporting an inconsistency between instances of
    one entity (patient, study, series …); None if not installed."""
    tool = _tool(("/usr/bin/dcentvfy",), "dcentvfy")
    if tool is None:
        log.warning("dcentvfy not installed; entity check skipped")
        return None
    proc = subprocess.run([tool, *map(str, paths)], capture_output=True, text=True, errors="replace", timeout=300, check=False)
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines()]
    return [x for x in lines if x.startswith(("Error", "Warning"))]


def dsrdump(path: str | Path) -> str | None:
    """DCMTK's rendering of an SR; None if not installed. Raises if unreadable."""
    tool = _tool(_DSRDUMP, "dsrdump")
    if tool is None:
        log.warning("dsrdump not installed; SR check skipped")
        return None
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise ValueError(f"path: dsrdump could not read {path}: {proc.stderr.strip()[:500]}")
    return proc.stdout
