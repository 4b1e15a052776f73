"""Durable, atomic storage of received instances.

Layout: ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``. Each file
is written to ``<spool>/.incoming/`` first, fsync'ed, renamed into place, and
its directory fsync'ed — only then may the SCP acknowledge it. Instances of
concurrent associations go through these steps together (``groupsync.py``:
one round of fsyncs, one directory fsync per folder). Rename over an
existing file makes a duplicate SOP Instance UID replace the earlier copy
atomically. Path components are UIDs that were checked against the DICOM UID
grammar, so no peer can name a file outside the spool.

One SOP Instance UID has one place: ``<spool>/.sop/<xx>/<sop uid>`` is a
symbolic link to the instance's path, created atomically before the first
copy is written. The same UID sent again for the same study and series
replaces the earlier copy (counted once); sent for another study or series
it is refused (``DuplicateInstanceError`` → 0xA900), so the spool never
holds two files for one UID and an index rebuilt from the spool agrees
with the index written live.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from radnode.listener.groupsync import GroupSync, Pending, fsync_dir
from radnode.uids import is_valid_uid

INCOMING = ".incoming"
CLAIMS = ".sop"


class UnsafeUIDError(ValueError):
    """A UID that would name a file is not a valid DICOM UID."""


class DuplicateInstanceError(FileExistsError):
    """The SOP Instance UID is already stored under another study or series."""

    def __init__(self, existing: str) -> None:
        super().__init__(f"already stored as {existing}")
        self.existing = existing


class Spool:
    """Writes instances atomically under one root folder."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.fsync = fsync
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.claims = self.root / CLAIMS
        self.claims.mkdir(exist_ok=True)
        #: Instances written by concurrent associations share their directory fsyncs (groupsync.py).
        self.group = GroupSync()

    def _claim_path(self, sop_uid: str) -> Path:
        return self.claims / hashlib.sha1(sop_uid.encode()).hexdigest()[:2] / sop_uid

    def claim(self, relative: Path) -> bool:
        """Reserve the instance's SOP UID for *relative*; True if this call created the claim.

        Raises DuplicateInstanceError when the UID belongs to another path.
        """
        link = self._claim_path(relative.stem)
        target = relative.as_posix()
        try:
            existing = os.readlink(link)
        except FileNotFoundError:
            link.parent.mkdir(exist_ok=True)
            try:
                os.symlink(target, link)
                return True
            except FileExistsError:
                existing = os.readlink(link)
        if existing != target:
            raise DuplicateInstanceError(existing)
        return False

    def release_claim(self, relative: Path) -> None:
        self._claim_path(relative.stem).unlink(missing_ok=True)

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
        created = self.claim(relative)
        tmp = self.incoming / f"{uuid.uuid4().hex}.part"
        fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            parent = final.parent
            if not parent.is_dir():
                parent.mkdir(parents=True, exist_ok=True)
                if self.fsync:
                    fsync_dir(parent.parent)
                    fsync_dir(parent.parent.parent)
            if self.fsync:
                # fsync(file), rename, fsync(dir) — in a round shared with concurrent writers.
                owned, fd = fd, -1
                self.group.commit(Pending(owned, tmp, final))
            else:
                os.close(fd)
                fd = -1
                os.replace(tmp, final)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            if created:
                self.release_claim(relative)
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
            if study.name in (INCOMING, CLAIMS) or not study.is_dir():
                continue
            yield from study.glob("*/*.dcm")


    def repair_claims(self) -> int:
        """At start: drop claims whose write never completed (crash), add missing ones.

        A spool from before claims existed gets one per stored instance.
        """
        for link in self.claims.glob("*/*"):
            if not (self.root / os.readlink(link)).exists():
                link.unlink(missing_ok=True)
        made = 0
        for path in self.iter_instances():
            rel = path.relative_to(self.root)
            try:
                made += self.claim(rel)
            except DuplicateInstanceError:
                pass  # an older spool may hold one UID twice; the first claim stands
        return made


