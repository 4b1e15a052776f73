"""The fast path's hand-written command sets agree with pynetdicom's/pydicom's codec."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.uid import MRImageStorage
from pynetdicom.dsutils import decode

from radnode.listener.faststore import StoreCommand, encode_response, read_command, response_pdu, store_command
from tests.support.rawscu import c_echo_rq, c_store_rq, command_set

SOP = "1.2.826.0.1.3680043.8.498.12345.1"


def test_a_c_store_request_is_read_as_pydicom_reads_it() -> None:
    encoded = c_store_rq(MRImageStorage, SOP, message_id=77)
    ds = decode(BytesIO(encoded), True, True)
    command = store_command(read_command(encoded) or {}, MRImageStorage)
    assert command == StoreCommand(int(ds.MessageID), str(ds.AffectedSOPClassUID), str(ds.AffectedSOPInstanceUID))
    assert command == StoreCommand(77, MRImageStorage, SOP)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC212])
def test_the_response_decodes_to_a_c_store_rsp_with_every_field(status: int) -> None:
    encoded = encode_response(StoreCommand(65535, MRImageStorage, SOP + "1"), status)  # odd-length UID: padded
    ds = decode(BytesIO(encoded), True, True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 65535
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == status
    assert ds.AffectedSOPClassUID == MRImageStorage
    assert ds.AffectedSOPInstanceUID == SOP + "1"
    assert len(encoded) % 2 == 0


def test_the_response_pdu_is_one_last_command_fragment() -> None:
    body = encode_response(StoreCommand(1, MRImageStorage, SOP), 0)
    pdu = response_pdu(5, body)
    pdu_type, _, length = struct.unpack_from(">BBI", pdu)
    item_length, context_id, control = struct.unpack_from(">IBB", pdu, 6)
    assert (pdu_type, length, item_length, context_id, control) == (0x04, len(pdu) - 6, len(body) + 2, 5, 0x03)
    assert pdu[12:] == body


@pytest.mark.parametrize(
    "encoded, abstract",
    [
        (c_echo_rq(), MRImageStorage),  # another command
        (c_store_rq(MRImageStorage, SOP, has_dataset=False), MRImageStorage),  # no data set announced
        (c_store_rq(MRImageStorage, SOP), "1.2.840.10008.5.1.4.1.1.2"),  # not the context's SOP class
        (c_store_rq(MRImageStorage, "1.2.3..4"), MRImageStorage),  # invalid SOP Instance UID
        (c_store_rq(MRImageStorage, ""), MRImageStorage),  # empty SOP Instance UID
        (c_store_rq(MRImageStorage, "1." + "2" * 70), MRImageStorage),  # over 64 characters
        (command_set([(0x0002, MRImageStorage.encode() + b"\0"), (0x0100, b"\x01\x00"), (0x0110, b"\x01\x00"),
                      (0x0800, b"\x00\x00"), (0x1000, SOP.encode() + b"\0"), (0x5010, b"ab")]), MRImageStorage),  # unknown element
        (command_set([(0x0002, MRImageStorage.encode() + b"\0"), (0x0100, b"\x01\x00"), (0x0110, b"\x01\x00\x00\x00"),
                      (0x0800, b"\x00\x00"), (0x1000, SOP.encode() + b"\0")]), MRImageStorage),  # US of 4 bytes
    ],
)
def test_anything_but_a_plain_c_store_is_left_to_pynetdicom(encoded: bytes, abstract: str) -> None:
    elements = read_command(encoded)
    assert elements is None or store_command(elements, abstract) is None


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xff" * 32,  # not group 0000
        c_store_rq(MRImageStorage, SOP)[:-3],  # cut inside the last value
        c_store_rq(MRImageStorage, SOP) + struct.pack("<HHI", 0, 0x0002, 2) + b"1\0",  # out of order / repeated
        struct.pack("<HHI", 0, 0x0100, 0xFFFFFFF0) + b"\x01\x00",  # a length past the end
    ],
)
def test_a_malformed_command_set_is_not_read(encoded: bytes) -> None:
    assert read_command(encoded) is None
