"""Durable, atomic storage of received instances.

Layout: ``<spool>/<study uid>/<series uid>/<sop instance uid>.dcm``. Each file
is written to ``<spool>/.incoming/`` first and renamed into place; rename over
an existing file makes a duplicate SOP Instance UID replace the earlier copy
atomically. Path components are UIDs that were checked against the DICOM UID
grammar, so no peer can name a file outside the spool.

What is durable when ``write`` returns (the SCP acknowledges only then):

* ``fsync=True`` with the journal (the default, ``journal.py``): the instance's
  path and bytes are a synced record in ``<spool>/.journal/`` (one pwrite +
  one fdatasync, shared by concurrent associations). The file itself is
  renamed into place without fsync; a background checkpoint flushes it
  (``syncfs``) within about half a second, and after a crash the journal
  writes it again when the next ``Spool`` is opened — before the index is
  reconciled with the spool.
* ``fsync=True`` for an instance too big for the journal (over a quarter of a
  segment), or without the journal: the file is fsync'ed, renamed, and its
  directory fsync'ed (``groupsync.py``: concurrent associations share one
  round of fsyncs and one directory fsync per folder).
* ``fsync=False``: nothing; the kernel writes the file back when it likes.

One SOP Instance UID has one place: ``<spool>/.sop/<xx>/<sop uid>`` is a
symbolic link naming the instance's study and series (a digest of their
folder, short enough to live in the inode), created atomically before the
first copy is written. The same UID sent again for the same study and series
replaces the earlier copy (counted once); sent for another study or series
it is refused (``DuplicateInstanceError`` → 0xA900), so the spool never
holds two files for one UID and an index rebuilt from the spool agrees
with the index written live.
"""

from __future__ import annotations

import errno
import hashlib
import os
import itertools
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

from radnode.listener.groupsync import GroupSync, Pending, fsync_dir
from radnode.listener.journal import DEFAULT_SEGMENT_SIZE, JOURNAL, Journal
from radnode.uids import is_valid_uid

log = structlog.get_logger(__name__)

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

    def __init__(
        self, root: Path, *, fsync: bool = True, journal: bool = True, segment_size: int = DEFAULT_SEGMENT_SIZE
    ) -> None:
        """Open the spool; with *fsync* and *journal*, replay what a crash left in the journal first."""
        self.root = root.resolve()
        self.fsync = fsync
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.claims = self.root / CLAIMS
        self.claims.mkdir(exist_ok=True)
        self._make_claim_folders()
        #: Instances written by concurrent associations share their directory fsyncs (groupsync.py).
        self.group = GroupSync()
        # Partial-file names: random per Spool (several listener processes share .incoming), then a count
        # (a uuid4 per instance cost a getrandom call and a UUID object on the receive path).
        self._part_prefix = uuid.uuid4().hex[:16]
        self._part_numbers = itertools.count()
        #: The durable fast path (journal.py); None: every instance is fsync'ed on its own.
        self.journal: Journal | None = self._open_journal(segment_size) if fsync and journal else None

    def _open_journal(self, segment_size: int) -> Journal | None:
        try:
            return Journal(self.root, incoming=self.incoming, segment_size=segment_size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise  # any other failure, of a replay especially, must not go unnoticed
            # A full disk: segments could not be created (or records not replayed; they stay in
            # their slot for the next start). The error names no file: paths hold UIDs.
            log.warning("no room for the spool journal; each instance is fsync'ed on its own", error=errno.errorcode[exc.errno])
            return None

    def close(self) -> None:
        """Checkpoint and release the journal; later writes fsync each file (still durable)."""
        if self.journal is not None:
            self.journal.close()

    def _claim_path(self, sop_uid: str) -> Path:
        return self.claims / hashlib.sha1(sop_uid.encode()).hexdigest()[:2] / sop_uid

    def _part_path(self) -> Path:
        """A fresh name in ``.incoming`` for a file being written (never reused in this process)."""
        return self.incoming / f"{self._part_prefix}-{next(self._part_numbers)}.part"

    def _make_claim_folders(self) -> None:
        """The 256 ``.sop/<xx>`` folders, made once: a folder made on an instance's path costs a new inode."""
        if (self.claims / "ff").is_dir():
            return
        for i in range(256):
            (self.claims / f"{i:02x}").mkdir(exist_ok=True)

    def claim(self, relative: Path) -> bool:
        """Reserve the instance's SOP UID for *relative*'s study and series; True if this call created the claim.

        Raises DuplicateInstanceError when the UID belongs to another study or series.
        """
        link = self._claim_path(relative.stem)
        target = claim_target(relative)
        try:
            existing = os.readlink(link)
        except FileNotFoundError:
            try:
                _symlink_in(link, target)
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

    def write(self, relative: Path, data: bytes, *, defer: Callable[[Callable[[], None]], None] | None = None) -> Path:
        """Make *data* durable for *relative* and place it there atomically; return the final path.

        Raises OSError (e.g. ENOSPC) with nothing left behind on failure.

        *defer* (the fast C-STORE path's "after the response" list): with the
        journal, ``write`` returns once the record is durable and hands *defer*
        the placing of the file, which then runs after the peer has its answer
        — off the one-sender critical path (issue 18). A file that cannot be
        placed then (disk full) stays in the journal, which the next start
        replays; from then on every instance takes the per-file path.
        """
        final = self.root / relative
        created = self.claim(relative)
        if defer is not None and self.journal is not None:
            try:
                placed = self.journal.append_unplaced(relative.as_posix(), data)
            except BaseException:
                if created:
                    self.release_claim(relative)
                raise
            if placed is not None:
                defer(lambda: self._place(final, data, placed))
                return final
        tmp = self._part_path()
        fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            parent = final.parent
            made = not parent.is_dir()
            if made:
                parent.mkdir(parents=True, exist_ok=True)
            if self.journal is not None:
                os.close(fd)
                fd = -1
                # Durable once journaled; the file is placed (no fsync) before the segment can be checkpointed.
                if self.journal.append(relative.as_posix(), data, then=lambda: os.replace(tmp, final)):
                    return final
                fd = os.open(tmp, os.O_WRONLY)  # too big for the journal (or it failed): fsync the file
                self.journal.forget(relative.as_posix())  # an earlier journaled copy must not replay over this one
            if self.fsync and (made or self.journal is not None):
                # New folders must be durable too (with the journal, an earlier instance may have made them unsynced).
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

    def _place(self, final: Path, data: bytes, placed: Callable[[bool], None]) -> None:
        """Put a journaled instance's file in place (no fsync: the journal's checkpoint flushes it).

        Raises the OSError when it cannot; the record then stays in the journal, and the next
        start writes the file and indexes it (``reconcile``).
        """
        tmp = self._part_path()
        ok = False
        try:
            _write_new(tmp, data)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the series' first instance: its folder is made once, not tried per image
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            ok = True
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.error("journaled instance not placed; the journal keeps it for the next start",
                      error=errno.errorcode.get(exc.errno or 0, str(exc.errno)))
            raise  # the caller's later steps (its index record) must not run for a file that is not there
        finally:
            placed(ok)

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
            if study.name in (INCOMING, CLAIMS, JOURNAL) or not study.is_dir():
                continue
            yield from study.glob("*/*.dcm")


    def repair_claims(self) -> int:
        """At start: drop claims whose write never completed (crash), add missing ones.

        A spool from before claims existed gets one per stored instance; a claim
        from before claims held a digest (it held the instance's path) is rewritten.
        """
        instances = [path.relative_to(self.root) for path in self.iter_instances()]  # one walk of the spool
        stored: dict[str, set[str]] = {}
        for rel in instances:
            stored.setdefault(rel.stem, set()).add(claim_target(rel))
        for link in self.claims.glob("*/*"):
            target = os.readlink(link)
            if target in stored.get(link.name, ()):
                continue
            if not target.startswith(_DIGEST) and (self.root / target).is_file():
                fresh = link.with_name(f"{link.name}.new")
                fresh.unlink(missing_ok=True)
                os.symlink(claim_target(Path(target)), fresh)
                os.replace(fresh, link)
                continue
            link.unlink(missing_ok=True)
        made = 0
        for rel in instances:
            try:
                made += self.claim(rel)
            except DuplicateInstanceError:
                pass  # an older spool may hold one UID twice; the first claim stands
        return made


_DIGEST = "d-"


def claim_target(relative: Path) -> str:
    """What the claim link of the instance at *relative* holds: a digest of its study/series folder.

    Why a digest and not the path: ext4 keeps a link target under 60 bytes in
    the inode itself, a longer one (two UIDs and a file name: up to ~200
    bytes) costs a data block for every instance received (issue 18).
    Equal digests mean the same study and series.
    """
    return _DIGEST + hashlib.blake2b(relative.parent.as_posix().encode(), digest_size=20).hexdigest()


def _symlink_in(link: Path, target: str) -> None:
    """``os.symlink``, making *link*'s folder if it is missing (the claim folders are made once, at start)."""
    try:
        os.symlink(target, link)
    except FileNotFoundError:
        link.parent.mkdir(exist_ok=True)
        os.symlink(target, link)


def _write_new(path: Path, data: bytes) -> None:
    """Create *path* (it must not exist) holding *data*: open, write, close, nothing more.

    (``open(path, "xb")`` added a stat, a terminal check and a seek per image on the receive path.)
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
