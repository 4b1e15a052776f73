"""DIMSE status codes radnode answers with (PS3.4 Annex B.2.3, PS3.7 C).

Every failure a sender can act on has a named code, so a PACS log shows why
an instance was refused and whether a retry can help. This is the one table;
README's listener section repeats it.

=========  =========================  ==============================================================
code       name                       when
=========  =========================  ==============================================================
0x0000     SUCCESS                    stored durably
0x0110     PROCESSING_FAILURE         an unexpected error in radnode
0x0122     SOP_CLASS_NOT_SUPPORTED    the command's SOP class is not the presentation context's
0xA700     OUT_OF_RESOURCES           disk full (retry once space returns)
0xA701     TOO_LARGE                  the data set (inflated size for deflated data included) is over
                                      ``listener.max_instance_bytes``; its bytes were discarded
0xA900     DATASET_MISMATCH           command and data set disagree on the SOP Instance UID, or the
                                      SOP Instance UID is already stored in another study/series
0xC210     CANNOT_UNDERSTAND          the data set cannot be parsed, or lacks Study/Series UIDs
0xC212     INVALID_UID                a UID in the command or data set is not a valid DICOM UID
                                      (empty, over 64 characters, bad characters)
0xC213     NESTING_TOO_DEEP           sequences nested deeper than the parser handles
0xC214     EMPTY_DATA_SET             the C-STORE carried a 0-byte data set
=========  =========================  ==============================================================

0xC211 is pynetdicom's answer when a handler raises; radnode's handlers do
not raise, so seeing it means a bug.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    SUCCESS = 0x0000
    #: Refused: out of resources (disk full). Retryable once space returns.
    OUT_OF_RESOURCES = 0xA700
    #: Refused: out of resources — the data set is larger than radnode accepts.
    TOO_LARGE = 0xA701
    #: Error: data set does not match SOP class / request, or duplicates another series' instance.
    DATASET_MISMATCH = 0xA900
    #: Error: cannot understand (the data set could not be parsed).
    CANNOT_UNDERSTAND = 0xC210
    #: Error: cannot understand — a UID in the command or data set is not a valid UID.
    INVALID_UID = 0xC212
    #: Error: cannot understand — sequences nested too deeply.
    NESTING_TOO_DEEP = 0xC213
    #: Error: cannot understand — the data set is empty.
    EMPTY_DATA_SET = 0xC214
    #: Refused: the command's SOP class does not belong to its presentation context.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: Failure: processing failure (an unexpected error in radnode).
    PROCESSING_FAILURE = 0x0110


#: Duplicate SOP Instance UID in another study or series (same code, its own name for logs).
DUPLICATE_ELSEWHERE = StoreStatus.DATASET_MISMATCH


class EchoStatus(IntEnum):
    SUCCESS = 0x0000
