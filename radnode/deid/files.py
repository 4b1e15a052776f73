"""De-identified copies of DICOM files for an external destination, and the
node secret that keys the pseudonyms.

The secret lives in ``data_dir/deid_secret`` (mode 0600, created once, never
sent): with it the same original always gets the same pseudonym, so a
retried send, the confirming C-FIND and a result that comes back all meet
the same UIDs; without it nobody can reverse them.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from pydicom import dcmread

from radnode.deid.profile import DeidOptions, Deidentifier, SqlMappingStore
from radnode.local_secret import read_or_create


def node_secret(data_dir: Path) -> bytes:
    """The node's de-identification key from ``data_dir/deid_secret``; created (0600) on first use."""
    return bytes.fromhex(read_or_create(Path(data_dir) / "deid_secret", lambda: secrets.token_hex(32)))


def deidentify_files(deid: Deidentifier, files: list[Path], out_dir: Path) -> dict[Path, tuple[str, str]]:
    """Write a de-identified copy of each file into *out_dir*.

    Returns copy path → (original SOP Instance UID, pseudonymous one), so a
    send's per-instance report can be told in the original UIDs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    copies: dict[Path, tuple[str, str]] = {}
    for i, path in enumerate(files):
        ds = dcmread(path)
        original = str(ds.SOPInstanceUID)
        out = deid.deidentify(ds)
        target = out_dir / f"{i:05d}.dcm"
        out.save_as(target, enforce_file_format=True)
        copies[target] = (original, str(out.SOPInstanceUID))
    return copies


def reidentify_file(deid: Deidentifier, path: Path, out: Path) -> Path:
    """Write *path* (an object that came back from an external analysis) re-identified to *out*."""
    ds = deid.reidentify(dcmread(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def node_deidentifier(settings: Any, sessions: Any) -> Deidentifier:
    """The node's de-identifier: its own key (``data_dir/deid_secret``), the map in its database and the
    profile options of ``settings.delivery.deid``."""
    options = settings.delivery.deid
    return Deidentifier(SqlMappingStore(sessions), node_secret(settings.data_dir),
                        DeidOptions(retain_uids=options.retain_uids, retain_dates=options.retain_dates))
