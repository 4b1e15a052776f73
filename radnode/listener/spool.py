"""Durable, atomic storage of received instances.

Layout: ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``. Each file
is written to ``<spool>/.incoming/`` first, fsync'ed, renamed into place, and
its directory fsync'ed — only then may the SCP acknowledge it. Rename over an
existing file makes a duplicate SOP Instance UID replace the earlier copy
atomically. Path components are UIDs that were checked against the DICOM UID
grammar, so no peer can name a file outside the spool.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from radnode.uids import is_valid_uid

INCOMING = ".incoming"


class UnsafeUIDError(ValueError):
    """A UID that would name a file is not a valid DICOM UID."""


class Spool:
    """Writes instances atomically under one root folder."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.fsync = fsync
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The spool path of an instance; raises UnsafeUIDError for a bad UID."""
        for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid), ("SOPInstanceUID", sop_uid)):
            if not is_valid_uid(uid):
                raise UnsafeUIDError(f"{name} is not a valid DICOM UID: {uid!r:.80}")
        return Path(study_uid) / series_uid / f"{sop_uid}.dcm"

    def write(self, relative: Path, data: bytes) -> Path:
        """Atomically place *data* at *relative*; return the final path.

        Raises OSError (e.g. ENOSPC) with nothing left behind on failure.
        """
        final = self.root / relative
        tmp = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            parent = final.parent
            if not parent.is_dir():
                parent.mkdir(parents=True, exist_ok=True)
                if self.fsync:
                    _fsync_dir(parent.parent)
                    _fsync_dir(parent.parent.parent)
            os.replace(tmp, final)
            if self.fsync:
                _fsync_dir(parent)
        except BaseException:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise
        return final

    def clean_incoming(self) -> int:
        """Remove partial files left by a crash; they were never acknowledged."""
        removed = 0
        for part in self.incoming.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def iter_instances(self):  # type: ignore[no-untyped-def]
        """Every stored instance file (for reconciliation after a crash)."""
        for study in self.root.iterdir():
            if study.name == INCOMING or not study.is_dir():
                continue
            yield from study.glob("*/*.dcm")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
