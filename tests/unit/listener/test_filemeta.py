"""radnode's hand-encoded file meta equals pydicom's encoding of the same elements."""

from __future__ import annotations

import pytest
from pynetdicom.dsutils import create_file_meta, encode_file_meta as pydicom_encode

from radnode.listener.filemeta import encode_file_meta


@pytest.mark.parametrize(
    ("sop_class", "sop_uid", "ts", "calling", "called"),
    [
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", "1.2.840.10008.1.2.1", "STORESCU", "RADNODE"),
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.44", "1.2.840.10008.1.2", "A", "RADNODE2"),
        ("1.2.840.10008.5.1.4.1.1.4", "2.25.1", "1.2.840.10008.1.2.4.90", "", "X"),
    ],
)
def test_same_bytes_as_pydicom(sop_class: str, sop_uid: str, ts: str, calling: str, called: str) -> None:
    meta = create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_uid, transfer_syntax=ts)
    meta.SourceApplicationEntityTitle = calling
    meta.ReceivingApplicationEntityTitle = called
    assert encode_file_meta(sop_class, sop_uid, ts, calling, called) == pydicom_encode(meta)
