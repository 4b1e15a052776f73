"""DIMSE status codes radnode answers with (PS3.4 Annex B.2.3, PS3.7 C).

Every failure a sender can act on has a named code, so a PACS log shows why
an instance was refused and whether a retry can help.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    SUCCESS = 0x0000
    #: Refused: out of resources (disk full). Retryable once space returns.
    OUT_OF_RESOURCES = 0xA700
    #: Error: data set does not match SOP class / request.
    DATASET_MISMATCH = 0xA900
    #: Error: cannot understand (the data set could not be parsed).
    CANNOT_UNDERSTAND = 0xC210
    #: Error: cannot understand — a UID in the data set is not a valid UID.
    INVALID_UID = 0xC212
    #: Failure: processing failure (an unexpected error in radnode).
    PROCESSING_FAILURE = 0x0110


class EchoStatus(IntEnum):
    SUCCESS = 0x0000
