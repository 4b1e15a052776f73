"""Write-ahead journal: the durable step of a C-STORE is one pwrite + one fdatasync.

Why: the spool's own way to make an instance durable (``groupsync.py``) is
fsync(new file), rename, fsync(directory). On the disks radnode runs on a new
file's fsync costs ~1 ms (2+ ms under load) and the directory fsync another
0.1-2 ms, which caps ingest. Overwriting an already written region of a file
and ``fdatasync``-ing it costs ~0.2 ms: no block allocation, no metadata. So
the instance's path and bytes are appended to a pre-written journal segment
and synced there; the spool file itself is then written and renamed into
place without any fsync, and made durable later, off the acknowledgement
path, by a checkpoint (``syncfs``). After a crash the journal's records are
written into the spool again before anything reads it.

Layout: ``<spool>/.journal/slot-<n>/`` with a ``lock`` file (``flock``: one
process per slot, so several listener processes each own one) and two
segments ``a.seg`` and ``b.seg`` of fixed size, written with zeros once when
created (never fallocate'd: a first write into a fallocated extent costs a
metadata commit). A segment starts with a 4096-byte header (magic, format
version, generation, size, crc) followed by records (magic, generation, path
length, data length, crc over the fields, path and data; then the relative
path and the data). A record counts only if its magic, crc and lengths are
right and its generation equals the segment's; replay stops at the first
one that does not.

Records go to the active segment. When it is full — or 0.5 s after its first
record, so that little is replayed and deleted files are not brought back —
the other segment becomes active and the full one is checkpointed in a
background thread: once every one of its records' files is in place,
``syncfs`` flushes them, then its header gets a new generation (one above
both segments'), which makes all of its records stale. An append waits only
if it needs the other segment while that one is still being checkpointed.

Concurrent associations append under one lock and share their fdatasyncs:
the thread that finds the sync lock free syncs everything appended so far,
the others wait for it (as in ``groupsync.py``; no timer).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog

from radnode.listener.groupsync import Rounds, fsync_dir

log = structlog.get_logger(__name__)

JOURNAL = ".journal"
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
HEADER_SIZE = 4096
VERSION = 1

_SEG_MAGIC = b"RNJOURNL"
_SEG = struct.Struct("<8sIQQ")  # magic, version, generation, segment size; then crc32
_REC_MAGIC = b"RNJR"
_REC_FIELDS = struct.Struct("<4sQHQ")  # magic, generation, path length, data length
_REC = struct.Struct("<4sQHQI")  # the fields, then crc32(path + data + fields)
_CRC = struct.Struct("<I")
_CHUNK = 1024 * 1024

_ACTIVE, _RETIRING, _CLEAN = "active", "retiring", "clean"


# -- the on-disk format ------------------------------------------------------------


def _pack_header(generation: int, size: int) -> bytes:
    fields = _SEG.pack(_SEG_MAGIC, VERSION, generation, size)
    head = fields + _CRC.pack(zlib.crc32(fields))
    return head + bytes(HEADER_SIZE - len(head))


def _unpack_header(block: bytes) -> int | None:
    """The generation of a segment header, or None if the header is not valid."""
    end = _SEG.size + _CRC.size
    if len(block) < end:
        return None
    magic, version, generation, _size = _SEG.unpack_from(block)
    (crc,) = _CRC.unpack_from(block, _SEG.size)
    if magic != _SEG_MAGIC or version != VERSION or crc != zlib.crc32(block[: _SEG.size]):
        return None
    return int(generation)


def _body_crc(path: bytes, data: bytes | memoryview) -> int:
    return zlib.crc32(data, zlib.crc32(path))


def _pack_record_head(generation: int, path: bytes, data_len: int, body_crc: int) -> bytes:
    fields = _REC_FIELDS.pack(_REC_MAGIC, generation, len(path), data_len)
    return _REC.pack(_REC_MAGIC, generation, len(path), data_len, zlib.crc32(fields, body_crc))


def record_size(path_len: int, data_len: int) -> int:
    return _REC.size + path_len + data_len


def read_records(fd: int, generation: int, end: int) -> Iterator[tuple[str, bytes]]:
    """The valid records of a segment of *generation*, in order, up to the first invalid one."""
    offset = HEADER_SIZE
    while offset + _REC.size <= end:
        head = os.pread(fd, _REC.size, offset)
        if len(head) < _REC.size:
            return
        magic, gen, path_len, data_len, crc = _REC.unpack(head)
        body_end = offset + _REC.size + path_len + data_len
        if magic != _REC_MAGIC or gen != generation or path_len == 0 or body_end > end:
            return
        body = os.pread(fd, path_len + data_len, offset + _REC.size)
        path, data = body[:path_len], body[path_len:]
        if len(body) != path_len + data_len or zlib.crc32(head[: _REC_FIELDS.size], _body_crc(path, data)) != crc:
            return
        relative = _safe_relative(path)
        if relative is None:
            return
        yield relative, data
        offset = body_end


def _safe_relative(raw: bytes) -> str | None:
    """A record's path if it names a file inside the spool (never absolute, no ``..``)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    parts = PurePosixPath(text).parts
    if not parts or text.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    return text


# -- files ---------------------------------------------------------------------------


def _pwrite_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]



def _mkdir_durable(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(exist_ok=True)
        fsync_dir(path.parent)


_libc: ctypes.CDLL | None = None


def syncfs(path: Path) -> None:
    """Flush everything written on *path*'s filesystem (``os.sync()`` where syncfs is missing)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        call = _libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if call(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    finally:
        os.close(fd)


def create_segment(path: Path, size: int, generation: int) -> None:
    """Write a segment full of zeros under a temporary name, sync it, rename it into place."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, _pack_header(generation, size))
        zeros = bytes(_CHUNK)
        left = size - HEADER_SIZE
        while left > 0:
            left -= os.write(fd, memoryview(zeros)[: min(left, _CHUNK)])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def place_file(root: Path, incoming: Path, relative: str, data: bytes) -> None:
    """Write *data* at ``root / relative`` atomically (temp file, rename), without fsync."""
    final = root / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _try_lock(slot: Path) -> int | None:
    """An fd holding the slot's lock, or None if another process (or Journal) holds it."""
    fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _slot_number(path: Path) -> int | None:
    name = path.name
    if not name.startswith("slot-") or not name[5:].isdigit():
        return None
    return int(name[5:])


# -- segments ------------------------------------------------------------------------


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int
    size: int
    generation: int
    state: str = _CLEAN
    tail: int = HEADER_SIZE
    pending: int = 0  # records appended whose files are not in place yet
    failed: bool = False  # an fdatasync failed: no record after it may be trusted
    first_at: float | None = None  # when the first record went in (time bound)
    paths: set[str] = field(default_factory=set)  # spool paths of its records (until checkpointed)

    @property
    def empty(self) -> bool:
        return self.tail == HEADER_SIZE

    def fits(self, size: int) -> bool:
        return not self.failed and self.tail + size <= self.size


@dataclass(eq=False)
class _Entry:
    """One appended record waiting for its fdatasync."""

    segment: _Segment
    done: bool = False
    error: BaseException | None = None


@dataclass
class _SegmentFile:
    path: Path
    generation: int | None  # None: missing or header invalid
    size: int


def _read_segment_file(path: Path) -> _SegmentFile:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _SegmentFile(path, None, 0)
    try:
        return _SegmentFile(path, _unpack_header(os.pread(fd, HEADER_SIZE, 0)), os.fstat(fd).st_size)
    finally:
        os.close(fd)


class Journal:
    """A write-ahead journal slot of one process (see the module docstring)."""

    def __init__(
        self,
        spool_root: Path,
        *,
        incoming: Path,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_age: float = 0.5,
    ) -> None:
        if segment_size < 4 * HEADER_SIZE:
            raise ValueError(f"journal segment too small: {segment_size}")
        self.root = spool_root
        self.incoming = incoming
        self.folder = spool_root / JOURNAL
        self.segment_size = segment_size
        #: Larger records are refused (append returns False): the caller fsyncs the file itself.
        self.max_record = (segment_size - HEADER_SIZE) // 4
        self.max_age = max_age
        self._cond = threading.Condition(threading.Lock())  # guards the segments' state
        #: fdatasync rounds shared by concurrent appends (the spool's group commit pattern).
        self._rounds: Rounds[_Entry] = Rounds(self._sync_round)
        self._broken = False
        self._closed = False
        #: Statistics: fdatasync rounds, records appended, checkpoints done.
        self.rounds = self.appended = self.checkpoints = 0
        _mkdir_durable(self.folder)
        self.replayed = 0
        self.slot, self._lock_fd = self._recover()
        try:
            self._segments = self._open_segments()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._active = min(self._segments, key=lambda s: s.generation)
        self._active.state = _ACTIVE
        self._thread = threading.Thread(target=self._checkpointer, name="radnode-journal", daemon=True)
        self._thread.start()

    # -- recovery ----------------------------------------------------------------------

    def _slots(self) -> list[Path]:
        found = [(n, p) for p in self.folder.iterdir() if (n := _slot_number(p)) is not None and p.is_dir()]
        return [p for _, p in sorted(found)]

    def _recover(self) -> tuple[Path, int]:
        """Replay every slot no live process holds; keep the lowest free one (locked) as this process's."""
        own: tuple[Path, int] | None = None
        slots = 0
        try:
            for slot in self._slots():
                fd = _try_lock(slot)
                if fd is None:
                    continue
                try:
                    self.replayed += self._replay_slot(slot)
                except BaseException:
                    os.close(fd)
                    raise
                slots += 1
                if own is None:
                    own = (slot, fd)
                else:
                    os.close(fd)
            if own is None:
                own = self._new_slot()
        except BaseException:
            if own is not None:
                os.close(own[1])
            raise
        if self.replayed:
            log.info("journal replayed after an unclean stop", records=self.replayed, slots=slots)
        return own

    def _replay_slot(self, slot: Path) -> int:
        """Write a slot's valid records into the spool, flush them, mark its segments clean."""
        files = [_read_segment_file(slot / name) for name in ("a.seg", "b.seg")]
        valid = sorted((f for f in files if f.generation is not None), key=lambda f: f.generation or 0)
        replayed: list[_SegmentFile] = []
        count = 0
        for seg in valid:
            n = self._replay_segment(seg)
            if n:
                replayed.append(seg)
                count += n
        if not replayed:
            return 0
        syncfs(self.root)
        top = max(f.generation or 0 for f in valid)
        for seg in replayed:  # their records are on disk in the spool now: make them stale
            top += 1
            _rewrite_header(seg.path, top, seg.size)
        return count

    def _replay_segment(self, seg: _SegmentFile) -> int:
        assert seg.generation is not None
        fd = os.open(seg.path, os.O_RDONLY)
        count = 0
        try:
            for relative, data in read_records(fd, seg.generation, seg.size):
                place_file(self.root, self.incoming, relative, data)
                count += 1
        finally:
            os.close(fd)
        return count

    def _new_slot(self) -> tuple[Path, int]:
        """The lowest slot free now (created if needed), locked; replayed in case its owner just died."""
        n = 0
        while True:
            slot = self.folder / f"slot-{n}"
            _mkdir_durable(slot)
            fd = _try_lock(slot)
            if fd is not None:
                try:
                    self.replayed += self._replay_slot(slot)
                except BaseException:
                    os.close(fd)
                    raise
                return slot, fd
            n += 1

    def _open_segments(self) -> list[_Segment]:
        """Open the slot's two segments (already replayed and clean); create missing or odd ones."""
        files = [_read_segment_file(self.slot / name) for name in ("a.seg", "b.seg")]
        top = max((f.generation or 0 for f in files), default=0)
        segments: list[_Segment] = []
        created: list[Path] = []
        try:
            for f in files:
                generation = f.generation
                if generation is None or f.size != self.segment_size:
                    # Missing, torn header or another size: zeros throughout, so no stale record survives.
                    top += 1
                    generation = top
                    create_segment(f.path, self.segment_size, generation)
                    created.append(f.path)
                fd = os.open(f.path, os.O_RDWR)
                segments.append(_Segment(f.path, fd, self.segment_size, generation))
        except BaseException:
            for s in segments:
                os.close(s.fd)
            for path in created:  # e.g. ENOSPC for the second one: give the space back
                path.unlink(missing_ok=True)
            raise
        return segments

    # -- appending ---------------------------------------------------------------------

    def append(self, relative: str, data: bytes | memoryview, then: Callable[[], None] | None = None) -> bool:
        """Make a record of *data* for spool path *relative* durable; False if it is not journaled.

        False: the record is too big, or the journal is closed or failed — the
        caller must make the file durable itself. *then* (placing the file)
        runs once the record is durable; the segment is not checkpointed before
        it returned. Raises OSError when the record could not be made durable.
        """
        placed = self.append_unplaced(relative, data)
        if placed is None:
            return False
        try:
            if then is not None:
                then()
        finally:
            placed(True)  # settles the segment (a failing *then* raises; its record stays replayable)
        return True

    def append_unplaced(self, relative: str, data: bytes | memoryview) -> Callable[[bool], None] | None:
        """As ``append``, for a caller that places the file later (after answering the peer).

        Returns None when the record is not journaled (as ``append``'s False),
        else the callable to run once the file is placed (``True``) or could
        not be (``False``: the journal keeps every record for the next start to
        replay and takes no more). The record's segment is not checkpointed
        before that call.
        """
        path = relative.encode()
        size = record_size(len(path), len(data))
        if size > self.max_record or self._broken or self._closed:
            return None
        entry = self._write(path, data, size, _body_crc(path, data))
        if entry is None:
            return None
        try:
            self._make_durable(entry)
        except BaseException:
            self._settle(entry.segment)
            raise
        segment = entry.segment

        def placed(ok: bool) -> None:
            if not ok:
                self.keep_records()
            self._settle(segment)

        return placed

    def keep_records(self) -> None:
        """Checkpoint nothing more: every record stays for the next start (a file could not be placed)."""
        with self._cond:
            if not self._broken:
                log.error("journal keeps its records for the next start; instances are fsync'ed one by one from now on")
            self._broken = True
            self._cond.notify_all()

    def _write(self, path: bytes, data: bytes | memoryview, size: int, body_crc: int) -> _Entry | None:
        with self._cond:
            seg = self._room(size)
            if seg is None:
                return None
            head = _pack_record_head(seg.generation, path, len(data), body_crc)
            try:
                _pwrite_all(seg.fd, [head + path, data], seg.tail)
            except OSError:
                seg.tail = seg.size  # a partial record ends the segment: switch at the next append
                raise
            seg.tail += size
            seg.paths.add(path.decode())
            seg.pending += 1
            self.appended += 1
            if seg.first_at is None:
                seg.first_at = time.monotonic()
                self._cond.notify_all()  # the checkpointer starts the time bound
            entry = _Entry(seg)
            self._rounds.add(entry)
            return entry

    def _room(self, size: int) -> _Segment | None:
        """(Holding the lock) the segment the next record goes to, switching if needed; None if closed or broken."""
        while True:
            if self._broken or self._closed:
                return None
            seg = self._active
            other = self._other(seg)
            if seg.fits(size) and not (self._too_old(seg) and other.state == _CLEAN):
                return seg
            if seg.empty and not seg.failed:
                return None  # cannot happen: max_record fits an empty segment
            if other.state == _CLEAN:
                self._switch()
                continue
            self._cond.wait()  # the other segment is still being checkpointed

    def _other(self, seg: _Segment) -> _Segment:
        return self._segments[1] if seg is self._segments[0] else self._segments[0]

    def _too_old(self, seg: _Segment) -> bool:
        return seg.first_at is not None and time.monotonic() - seg.first_at >= self.max_age

    def _switch(self) -> None:
        """Hand the active segment to the checkpointer and make the (clean) other one active."""
        old = self._active
        new = self._other(old)
        old.state = _RETIRING
        new.state = _ACTIVE
        new.first_at = None
        self._active = new
        self._cond.notify_all()

    def _make_durable(self, entry: _Entry) -> None:
        """Return once *entry*'s record is synced, syncing everything appended so far if nobody is."""
        self._rounds.wait(entry)

    def _sync_round(self, batch: list[_Entry]) -> None:
        self.rounds += 1
        errors: dict[int, OSError] = {}
        for seg in {id(e.segment): e.segment for e in batch}.values():
            if seg.failed:
                errors[id(seg)] = OSError(errno.EIO, "journal segment failed earlier")
                continue
            try:
                os.fdatasync(seg.fd)
            except OSError as exc:
                errors[id(seg)] = exc
                with self._cond:
                    seg.failed = True  # later records behind a lost one would not replay
                log.error("journal fdatasync failed", error=str(exc)[:200])
        for e in batch:
            e.error = errors.get(id(e.segment))
            e.done = True

    def _settle(self, seg: _Segment) -> None:
        with self._cond:
            seg.pending -= 1
            if seg.pending == 0 and (seg.state != _ACTIVE or self._closed):
                self._cond.notify_all()  # a checkpoint or close() waits for it

    # -- checkpoints -------------------------------------------------------------------

    def _checkpointer(self) -> None:
        with self._cond:
            while True:
                retiring = next((s for s in self._segments if s.state == _RETIRING), None)
                if retiring is not None and not self._broken:
                    if retiring.pending:
                        self._cond.wait()
                        continue
                    self._cond.release()
                    try:
                        self._checkpoint(retiring)
                    finally:
                        self._cond.acquire()
                    continue
                if self._closed or self._broken:
                    return
                self._wait_for_age()

    def _wait_for_age(self) -> None:
        """(Holding the lock) switch when the active segment's first record is max_age old."""
        seg = self._active
        if seg.first_at is None or self._other(seg).state != _CLEAN:
            self._cond.wait()
            return
        left = seg.first_at + self.max_age - time.monotonic()
        if left > 0:
            self._cond.wait(left)
        elif not seg.empty:
            self._switch()

    def _checkpoint(self, seg: _Segment) -> bool:
        """(Not holding the lock) flush the files of *seg*'s records, then make its records stale.

        On failure the journal is broken: its records stay for the next start to
        replay, and appends return False (instances are fsync'ed one by one).
        """
        try:
            syncfs(self.root)
            with self._cond:
                generation = max(s.generation for s in self._segments) + 1
            os.pwrite(seg.fd, _pack_header(generation, seg.size), 0)
            os.fdatasync(seg.fd)
        except OSError as exc:
            log.error("journal checkpoint failed; instances are fsync'ed one by one from now on", error=str(exc)[:200])
            with self._cond:
                self._broken = True
                self._cond.notify_all()
            return False
        with self._cond:
            seg.generation = generation
            seg.tail = HEADER_SIZE
            seg.failed = False
            seg.first_at = None
            seg.paths = set()
            seg.state = _CLEAN
            self.checkpoints += 1
            self._cond.notify_all()
        return True

    def forget(self, relative: str) -> None:
        """Return once no record for *relative* can be replayed any more (its segments checkpointed).

        Why: an instance written without the journal (too big for it) replaces the
        file at *relative*; an earlier, journaled copy of the same path must not be
        replayed over it after a crash. Rare (the same SOP Instance UID sent again,
        this time larger than a record may be), so a forced checkpoint is fine.
        """
        with self._cond:
            while not (self._broken or self._closed):
                holding = [s for s in self._segments if relative in s.paths]
                if not holding:
                    return
                active = self._active
                if active in holding and self._other(active).state == _CLEAN:
                    self._switch()
                self._cond.wait(self.max_age)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint both segments and give up the slot; later appends return False."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            while any(s.pending for s in self._segments):
                self._cond.wait()
            dirty = [s for s in self._segments if not s.empty]
            broken = self._broken
        try:
            if not broken:
                for seg in sorted(dirty, key=lambda s: s.generation):
                    if not self._checkpoint(seg):
                        break
        finally:
            for seg in self._segments:
                os.close(seg.fd)
            os.close(self._lock_fd)


def _rewrite_header(path: Path, generation: int, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, _pack_header(generation, size), 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)
