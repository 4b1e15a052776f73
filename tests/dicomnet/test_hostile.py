"""Hostile input against the real listener, byte by byte (tests/support/rawscu.py).

Each case sends one malformed or hostile request on its own association and
asserts the DIMSE status radnode answers (or, below the DIMSE layer, that the
connection is dropped), and then that the listener still answers C-ECHO on a
fresh association. One listener serves the whole module, as it would in a
hospital: every case runs against a listener that already survived the ones
before it.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterator

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radnode.listener.index_writer import reconcile
from radnode.listener.service import ListenerService
from radnode.listener.status import StoreStatus
from radnode.settings import Settings
from radnode.store.studies import InstanceRow
from tests.support import rawscu
from tests.support.ports import free_port
from tests.support.rawscu import MR_STORAGE, VERIFICATION, RawAssociation, encode_dataset

ROOT = "1.2.826.0.1.3680043.8.498"
STUDY, SERIES = f"{ROOT}.1", f"{ROOT}.2"
LIMIT = 2 * 1024 * 1024  # listener.max_instance_bytes in this module

CONTEXTS = [
    (1, VERIFICATION, [ImplicitVRLittleEndian]),
    (3, MR_STORAGE, [ExplicitVRLittleEndian]),
    (5, MR_STORAGE, [ImplicitVRLittleEndian]),
    (7, MR_STORAGE, [DeflatedExplicitVRLittleEndian]),
]
CTX = {ExplicitVRLittleEndian: 3, ImplicitVRLittleEndian: 5, DeflatedExplicitVRLittleEndian: 7}
_counter = iter(range(10_000, 10**9))


def next_uid() -> str:
    return f"{ROOT}.77.{next(_counter)}"


@pytest.fixture(scope="module")
def hostile_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerService]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    settings = Settings(
        data_dir=data,
        port=free_port(),
        quiet_seconds=1.0,
        listener={"assembly_interval": 0.2, "network_timeout": 3.0, "max_instance_bytes": LIMIT, "max_nesting_depth": 8},
    )
    service = ListenerService(settings)
    service.start()
    yield service
    service.stop()


def mr(sop_uid: str, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MR_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.Modality = "MR"
    ds.SeriesNumber = 1
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key) if key in ds else None
        else:
            setattr(ds, key, value)
    return ds


def assert_still_answers(listener: ListenerService) -> None:
    assoc = RawAssociation("127.0.0.1", listener.settings.port, contexts=CONTEXTS)
    try:
        assert assoc.establish()
        assert assoc.c_echo() == 0x0000
    finally:
        assoc.release()


def store(listener: ListenerService, dataset: bytes, sop_uid: str, *, ts: str = ExplicitVRLittleEndian, sop_class: str = MR_STORAGE, fragment: int = 16000) -> int:
    assoc = RawAssociation("127.0.0.1", listener.settings.port, contexts=CONTEXTS)
    try:
        assert assoc.establish()
        return assoc.c_store(dataset, sop_uid=sop_uid, sop_class=sop_class, ctx_id=CTX[ts], fragment=fragment)
    finally:
        assoc.release()


# ---------------------------------------------------------------------------
# The case table: (id, build) where build() -> (dataset bytes, command SOP UID, TS, command SOP class, expected status)
# ---------------------------------------------------------------------------

Case = tuple[bytes, str, str, str, int]
CASES: dict[str, Callable[[], Case]] = {}

BAD_UIDS = {
    "over64": "1." + "2" * 70,
    "huge60000": "1." + "2" * 60000,
    "empty": "",
    "letters": "1.2.abc",
    "leading-zero": "1.02.3",
    "trailing-dot": "1.2.3.",
    "double-dot": "1..2",
    "dotdot": "..",
    "traversal": "1.2/../../etc",
    "slash": "1/2",
    "space": "1.2 3",
    "nul": "1.2\x003",
    "unicode": "1.2.é",
    "backslash": "1\\2",
    "dash": "1.2-3",
    "plus": "+1.2",
    "only-dot": ".",
    "65-exact": "1." + "1" * 63,
}
SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian}

for _name, _uid in BAD_UIDS.items():
    for _tsname, _ts in SYNTAXES.items():
        # The command's SOP Instance UID is unusable.
        CASES[f"command-sop-uid-{_name}-{_tsname}"] = lambda u=_uid, t=_ts: (encode_dataset(mr(f"{ROOT}.9.1"), t), u, t, MR_STORAGE, StoreStatus.INVALID_UID)
        # The command's SOP Class UID is unusable.
        CASES[f"command-sop-class-{_name}-{_tsname}"] = lambda u=_uid, t=_ts: (encode_dataset(mr(f"{ROOT}.9.2"), t), f"{ROOT}.9.2", t, u, StoreStatus.INVALID_UID)
        if _name in ("over64", "huge60000", "65-exact", "nul"):
            continue  # pydicom will not encode these into a data set; the command cases cover them
        # The data set's Study / Series UID is unusable (it would name a folder).
        CASES[f"dataset-study-uid-{_name}-{_tsname}"] = lambda u=_uid, t=_ts: (
            encode_dataset(mr(s := next_uid(), StudyInstanceUID=u or None), t), s, t, MR_STORAGE,
            StoreStatus.CANNOT_UNDERSTAND if not u else StoreStatus.INVALID_UID,
        )
        CASES[f"dataset-series-uid-{_name}-{_tsname}"] = lambda u=_uid, t=_ts: (
            encode_dataset(mr(s := next_uid(), SeriesInstanceUID=u or None), t), s, t, MR_STORAGE,
            StoreStatus.CANNOT_UNDERSTAND if not u else StoreStatus.INVALID_UID,
        )

OTHER_CLASSES = {
    "ct": "1.2.840.10008.5.1.4.1.1.2",
    "sr": "1.2.840.10008.5.1.4.1.1.88.33",
    "private": "1.2.3.4.5",
    "verification": VERIFICATION,
    "seg": "1.2.840.10008.5.1.4.1.1.66.4",
    "pdf": "1.2.840.10008.5.1.4.1.1.104.1",
}
for _name, _cls in OTHER_CLASSES.items():
    for _tsname, _ts in SYNTAXES.items():
        CASES[f"sop-class-not-the-contexts-{_name}-{_tsname}"] = lambda c=_cls, t=_ts: (
            encode_dataset(mr(s := next_uid()), t), s, t, c, StoreStatus.SOP_CLASS_NOT_SUPPORTED
        )

for _tsname, _ts in SYNTAXES.items():
    CASES[f"empty-data-set-{_tsname}"] = lambda t=_ts: (b"", next_uid(), t, MR_STORAGE, StoreStatus.EMPTY_DATA_SET)
    CASES[f"no-study-uid-{_tsname}"] = lambda t=_ts: (encode_dataset(mr(s := next_uid(), StudyInstanceUID=None), t), s, t, MR_STORAGE, StoreStatus.CANNOT_UNDERSTAND)
    CASES[f"no-series-uid-{_tsname}"] = lambda t=_ts: (encode_dataset(mr(s := next_uid(), SeriesInstanceUID=None), t), s, t, MR_STORAGE, StoreStatus.CANNOT_UNDERSTAND)
    CASES[f"sop-uid-mismatch-{_tsname}"] = lambda t=_ts: (encode_dataset(mr(next_uid()), t), next_uid(), t, MR_STORAGE, StoreStatus.DATASET_MISMATCH)
    CASES[f"sop-class-mismatch-{_tsname}"] = lambda t=_ts: (
        encode_dataset(mr(s := next_uid(), SOPClassUID="1.2.840.10008.5.1.4.1.1.2"), t), s, t, MR_STORAGE, StoreStatus.DATASET_MISMATCH
    )
    CASES[f"long-description-accepted-{_tsname}"] = lambda t=_ts: (encode_dataset(mr(s := next_uid(), SeriesDescription="x" * 60000), t), s, t, MR_STORAGE, StoreStatus.SUCCESS)
    CASES[f"only-file-meta-{_tsname}"] = lambda t=_ts: (
        struct.pack("<HH", 2, 0x16) + (b"AE\x08\x00SPOOFED " if t == ExplicitVRLittleEndian else struct.pack("<L", 8) + b"SPOOFED "),
        next_uid(), t, MR_STORAGE, StoreStatus.EMPTY_DATA_SET,
    )
    for _depth, _expected in ((3, StoreStatus.SUCCESS), (8, StoreStatus.SUCCESS), (9, StoreStatus.NESTING_TOO_DEEP), (50, StoreStatus.NESTING_TOO_DEEP), (120, StoreStatus.NESTING_TOO_DEEP)):
        CASES[f"nesting-{_depth}-{_tsname}"] = lambda d=_depth, t=_ts, e=_expected: (_nested(d, t), _last_uid, t, MR_STORAGE, e)

# Garbage of many shapes: never parsed into a stored instance.
for _seed in range(40):
    CASES[f"garbage-{_seed}"] = lambda seed=_seed: (_garbage(seed), next_uid(), ExplicitVRLittleEndian, MR_STORAGE, StoreStatus.CANNOT_UNDERSTAND)
for _cut in (1, 7, 8, 9, 20, 40):
    CASES[f"truncated-at-{_cut}"] = lambda c=_cut: (encode_dataset(mr(next_uid()))[:c], next_uid(), ExplicitVRLittleEndian, MR_STORAGE, StoreStatus.CANNOT_UNDERSTAND)

# Size: raw data sets and deflated bombs past listener.max_instance_bytes.
for _mb in (3, 8):
    CASES[f"raw-over-limit-{_mb}mb"] = lambda mb=_mb: (_with_pixels(mb * 1024 * 1024, ExplicitVRLittleEndian), _last_uid, ExplicitVRLittleEndian, MR_STORAGE, StoreStatus.TOO_LARGE)
for _mb in (3, 16, 64):
    CASES[f"deflate-bomb-{_mb}mb"] = lambda mb=_mb: (_with_pixels(mb * 1024 * 1024, DeflatedExplicitVRLittleEndian), _last_uid, DeflatedExplicitVRLittleEndian, MR_STORAGE, StoreStatus.TOO_LARGE)
CASES["deflated-small-accepted"] = lambda: (_with_pixels(1024, DeflatedExplicitVRLittleEndian), _last_uid, DeflatedExplicitVRLittleEndian, MR_STORAGE, StoreStatus.SUCCESS)
CASES["deflate-broken-stream"] = lambda: (b"\xff" * 64, next_uid(), DeflatedExplicitVRLittleEndian, MR_STORAGE, StoreStatus.CANNOT_UNDERSTAND)

_last_uid = ""


def _nested(depth: int, ts: str) -> bytes:
    global _last_uid
    _last_uid = next_uid()
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds = mr(_last_uid)
    ds.ContentSequence = Sequence([inner])
    return encode_dataset(ds, ts)


def _with_pixels(size: int, ts: str) -> bytes:
    """A data set whose pixel data is *size* zero bytes (deflated: a ~1000:1 bomb)."""
    global _last_uid
    _last_uid = next_uid()
    head = encode_dataset(mr(_last_uid), ExplicitVRLittleEndian)
    pixel_header = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<L", size)
    if ts != DeflatedExplicitVRLittleEndian:
        return head + pixel_header + bytes(size)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [comp.compress(head + pixel_header)]
    zeros = bytes(1024 * 1024)
    for _ in range(size // len(zeros)):
        out.append(comp.compress(zeros))
    out.append(comp.compress(bytes(size % len(zeros))))
    out.append(comp.flush())
    return b"".join(out)


def _garbage(seed: int) -> bytes:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 5, 8, 13, 64, 500, 4096, 70000])
    data = bytes(rng.getrandbits(8) for _ in range(n))
    if seed % 4 == 0:  # looks like an element header with an absurd length
        data = struct.pack("<HH", 0x0008, 0x0018) + b"UI" + struct.pack("<H", 0xFFFF) + data
    elif seed % 4 == 1:  # group 0002 with a length past the end
        data = struct.pack("<HH", 0x0002, 0x0010) + b"UI" + struct.pack("<H", 0x4000) + data
    return data


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_c_store_is_answered_and_listener_survives(hostile_listener: ListenerService, case: str) -> None:
    dataset, sop_uid, ts, sop_class, expected = CASES[case]()
    status = store(hostile_listener, dataset, sop_uid, ts=ts, sop_class=sop_class)
    assert status == expected, f"0x{status:04X} != 0x{int(expected):04X}"
    assert_still_answers(hostile_listener)


# ---------------------------------------------------------------------------
# Below the DIMSE layer: PDUs that must drop the connection, not the listener.
# ---------------------------------------------------------------------------

PDU_CASES: dict[str, bytes] = {
    "unknown-pdu-type": struct.pack(">BBL", 0x09, 0, 4) + b"\x00" * 4,
    "pdata-over-max-pdu": struct.pack(">BBL", 0x04, 0, 200 * 1024 * 1024) + b"\x00" * 100,
    "associate-rq-over-limit": struct.pack(">BBL", 0x01, 0, 50 * 1024 * 1024) + b"\x00" * 100,
    "pdv-length-past-pdu": struct.pack(">BBL", 0x04, 0, 10) + struct.pack(">LBB", 5000, 3, 3) + b"\x00" * 4,
    "pdv-zero-length": struct.pack(">BBL", 0x04, 0, 4) + struct.pack(">L", 0),
    "bad-context-id": struct.pack(">BBL", 0x04, 0, 8) + struct.pack(">LBB", 4, 99, 3) + b"\x00\x00",
    "second-associate-rq": rawscu.associate_rq("RADNODE", "RAWSCU", CONTEXTS),
    "release-rp-unsolicited": struct.pack(">BBL", 0x06, 0, 4) + b"\x00" * 4,
    "garbage-after-header": struct.pack(">BBL", 0x04, 0, 64) + bytes(range(64)),
    "endless-command-fragments": b"".join(
        struct.pack(">BBL", 0x04, 0, 16006) + struct.pack(">LBB", 16002, 3, 0x01) + b"\x00" * 16000 for _ in range(8)
    ),
    "command-garbage": struct.pack(">BBL", 0x04, 0, 38) + struct.pack(">LBB", 34, 1, 3) + b"\xff" * 32,
}


@pytest.mark.parametrize("case", sorted(PDU_CASES))
def test_hostile_pdu_drops_the_connection_not_the_listener(hostile_listener: ListenerService, case: str) -> None:
    assoc = RawAssociation("127.0.0.1", hostile_listener.settings.port, contexts=CONTEXTS)
    try:
        assert assoc.establish()
        assoc.sock.sendall(PDU_CASES[case])
        # The listener answers with an abort or closes; it never waits for more.
        assert rawscu.is_closed(assoc.sock, wait=hostile_listener.settings.listener.network_timeout + 10)
    finally:
        assoc.close()
    assert_still_answers(hostile_listener)


def test_group_0002_in_a_data_set_cannot_forge_provenance(hostile_listener: ListenerService) -> None:
    """Acceptance: the stored file meta carries the association's calling AE, and so does the index after a rebuild."""
    sop = next_uid()
    study = f"{ROOT}.55.{next(_counter)}"
    ds = mr(sop, StudyInstanceUID=study)
    raw = encode_dataset(ds, ExplicitVRLittleEndian)
    forged = (
        struct.pack("<HH", 0x0002, 0x0010) + b"UI" + struct.pack("<H", 20) + b"1.2.840.10008.1.2.2\x00"
        + struct.pack("<HH", 0x0002, 0x0016) + b"AE" + struct.pack("<H", 10) + b"SPOOFED_AE"
        + struct.pack("<HH", 0x0002, 0x0018) + b"AE" + struct.pack("<H", 8) + b"EVILNODE"
    )
    assoc = RawAssociation("127.0.0.1", hostile_listener.settings.port, calling="REALMODALITY", contexts=CONTEXTS)
    try:
        assert assoc.establish()
        assert assoc.c_store(forged + raw, sop_uid=sop) == StoreStatus.SUCCESS
    finally:
        assoc.release()
    hostile_listener.flush()
    path = hostile_listener.spool.root / study / SERIES / f"{sop}.dcm"
    stored = dcmread(path)
    assert stored.file_meta.SourceApplicationEntityTitle.strip() == "REALMODALITY"
    assert stored.file_meta.ReceivingApplicationEntityTitle.strip() == "RADNODE"
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "SPOOFED_AE" not in path.read_bytes().decode("latin-1")
    # An index rebuilt from the spool says the same.
    with hostile_listener.sessions.begin() as s:
        s.query(InstanceRow).filter(InstanceRow.sop_instance_uid == sop).delete()
    reconcile(hostile_listener.spool, hostile_listener.sessions, hostile_listener.settings.quiet_seconds_for)
    with hostile_listener.sessions() as s:
        row = s.get(InstanceRow, sop)
        assert row is not None and row.calling_ae == "REALMODALITY" and row.study_instance_uid == study


def test_duplicate_sop_instance_uid_in_another_series_is_refused_and_rebuild_agrees(hostile_listener: ListenerService) -> None:
    sop = next_uid()
    study = f"{ROOT}.56.{next(_counter)}"
    assert store(hostile_listener, encode_dataset(mr(sop, StudyInstanceUID=study)), sop) == StoreStatus.SUCCESS
    # Same series again: replaces the copy (counted once).
    assert store(hostile_listener, encode_dataset(mr(sop, StudyInstanceUID=study, SeriesDescription="again")), sop) == StoreStatus.SUCCESS
    # Another series, another study: refused.
    assert store(hostile_listener, encode_dataset(mr(sop, StudyInstanceUID=study, SeriesInstanceUID=f"{ROOT}.57.1")), sop) == StoreStatus.DATASET_MISMATCH
    assert store(hostile_listener, encode_dataset(mr(sop, StudyInstanceUID=f"{ROOT}.57.2")), sop) == StoreStatus.DATASET_MISMATCH
    hostile_listener.flush()
    files = list(hostile_listener.spool.root.glob(f"*/*/{sop}.dcm"))
    assert [f.relative_to(hostile_listener.spool.root).as_posix() for f in files] == [f"{study}/{SERIES}/{sop}.dcm"]
    assert dcmread(files[0]).SeriesDescription == "again"
    with hostile_listener.sessions.begin() as s:
        s.query(InstanceRow).filter(InstanceRow.sop_instance_uid == sop).delete()
    reconcile(hostile_listener.spool, hostile_listener.sessions, hostile_listener.settings.quiet_seconds_for)
    with hostile_listener.sessions() as s:
        rows = s.query(InstanceRow).filter(InstanceRow.sop_instance_uid == sop).all()
        assert [(r.study_instance_uid, r.series_instance_uid) for r in rows] == [(study, SERIES)]


def test_case_count() -> None:
    """The issue asks for at least 200 hostile cases."""
    assert len(CASES) + len(PDU_CASES) >= 200
