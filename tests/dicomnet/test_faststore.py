"""C-STOREs served on the DUL thread (listener/faststore.py) through the real listener.

Plain C-STOREs take the fast path; anything else on the same association
(C-ECHO, a command with an element PS3.7 does not list for C-STORE, a
malformed command) goes through pynetdicom as before — and every answer is
a C-STORE-RSP a standard SCU (pynetdicom's, DCMTK's) reads.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

from radnode.listener import faststore
from radnode.listener.service import ListenerService
from radnode.listener.status import StoreStatus
from radnode.synth.mr_study import generate_mr_study
from tests.support import dcmtk
from tests.support.rawscu import MR_STORAGE, RawAssociation, _uid, c_store_rq, command_set, encode_dataset


def _study(tmp_path: Path, slices: int = 4) -> list[Path]:
    return list(generate_mr_study(tmp_path / "s", seed=11, series=("t1",), rows=32, columns=32, slices=slices).files)


def test_plain_stores_take_the_fast_path_and_odd_messages_the_pynetdicom_path(listener: ListenerService, tmp_path: Path) -> None:
    files = _study(tmp_path, slices=4)
    served0, forwarded0 = faststore.TALLY.served, faststore.TALLY.forwarded
    assoc = RawAssociation("127.0.0.1", listener.settings.port)
    try:
        assert assoc.establish()
        assert assoc.c_echo() == 0x0000  # pynetdicom's path
        first = dcmread(files[0])
        # A command in three fragments and a data set in 100-byte fragments: still the fast path.
        assoc.send_pdata(3, c_store_rq(MR_STORAGE, str(first.SOPInstanceUID), message_id=2), command=True, fragment=40)
        assoc.send_pdata(3, encode_dataset(first), command=False, fragment=100)
        assert assoc.read_status() == 0x0000
        # A command with Move Originator elements (allowed in a C-STORE-RQ): fast path.
        second = dcmread(files[1])
        assoc.send_pdata(3, command_set([
            (0x0002, _uid(MR_STORAGE)), (0x0100, b"\x01\x00"), (0x0110, b"\x03\x00"), (0x0700, b"\x00\x00"),
            (0x0800, b"\x00\x00"), (0x1000, _uid(str(second.SOPInstanceUID))), (0x1030, b"ORTHANC "),
            (0x1031, b"\x09\x00"),
        ]), command=True)
        assoc.send_pdata(3, encode_dataset(second), command=False)
        assert assoc.read_status() == 0x0000
        # A command carrying an element no C-STORE-RQ has (0000,0600 Move Destination): pynetdicom's path, stored too.
        third = dcmread(files[2])
        assoc.send_pdata(3, command_set([
            (0x0002, _uid(MR_STORAGE)), (0x0100, b"\x01\x00"), (0x0110, b"\x04\x00"), (0x0600, b"SOMEWHERE       "),
            (0x0700, b"\x00\x00"), (0x0800, b"\x00\x00"), (0x1000, _uid(str(third.SOPInstanceUID))),
        ]), command=True)
        assoc.send_pdata(3, encode_dataset(third), command=False)
        assert assoc.read_status() == 0x0000
        # An invalid SOP Instance UID: pynetdicom's path, radnode's verdict (handle_dimse_recv).
        assoc.send_pdata(3, c_store_rq(MR_STORAGE, "1.2.3..4", message_id=5), command=True)
        assoc.send_pdata(3, encode_dataset(dcmread(files[3])), command=False)
        assert assoc.read_status() == StoreStatus.INVALID_UID
        assert assoc.c_echo() == 0x0000
    finally:
        assoc.release()
    assert faststore.TALLY.served - served0 == 2
    assert faststore.TALLY.forwarded - forwarded0 == 4  # two C-ECHOs, the odd command, the invalid UID
    listener.flush()
    stored = sorted(p.name for p in listener.spool.root.rglob("*.dcm"))
    assert stored == sorted(f"{dcmread(f).SOPInstanceUID}.dcm" for f in files[:3])
    for f in files[:3]:
        sop = str(dcmread(f).SOPInstanceUID)
        (path,) = listener.spool.root.rglob(f"{sop}.dcm")
        assert dcmread(path).PixelData == dcmread(f).PixelData


def test_pynetdicom_scu_reads_every_field_of_the_fast_response(listener: ListenerService, tmp_path: Path) -> None:
    files = _study(tmp_path, slices=2)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MR_STORAGE)
    assoc = ae.associate("127.0.0.1", listener.settings.port, ae_title="RADNODE")
    assert assoc.is_established
    served0 = faststore.TALLY.served
    try:
        for n, path in enumerate(files, start=1):
            ds = dcmread(path)
            status = assoc.send_c_store(ds, msg_id=1000 + n)
            assert status.Status == 0x0000
        # pynetdicom checks MessageIDBeingRespondedTo and the UIDs; a duplicate in another series is refused.
        clash = dcmread(files[0])
        clash.SeriesInstanceUID = clash.SeriesInstanceUID + ".9"
        assert assoc.send_c_store(clash).Status == StoreStatus.DATASET_MISMATCH
    finally:
        assoc.release()
    assert faststore.TALLY.served - served0 == 3


def test_dcmtk_storescu_sends_a_series_through_the_fast_path(listener: ListenerService, tmp_path: Path) -> None:
    files = _study(tmp_path, slices=12)
    served0 = faststore.TALLY.served
    result = dcmtk.storescu("127.0.0.1", listener.settings.port, files, "RADNODE")
    assert result.returncode == 0, result.stderr[-2000:]
    assert faststore.TALLY.served - served0 == len(files)
    listener.flush()
    assert len(list(listener.spool.root.rglob("*.dcm"))) == len(files)
