"""DICOM UID checks and deterministic UID derivation.

UIDs arrive from the network and are untrusted: they are checked against the
grammar of PS3.5 §9.1 before they name anything on disk.
"""

from __future__ import annotations

import re
import uuid

from radnode import UID_ROOT

# PS3.5 9.1: components of digits separated by '.', no leading zero in a
# multi-digit component, at most 64 characters in all.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")

_NAMESPACE = uuid.UUID("6f1c1a52-5a3e-4d1b-9d8e-7a0c2b9e4e11")


def is_valid_uid(value: object) -> bool:
    """Return True if *value* is a syntactically valid DICOM UID."""
    if not isinstance(value, str):
        return False
    return 0 < len(value) <= 64 and _UID_RE.match(value) is not None


def derive_uid(*parts: str) -> str:
    """Derive a stable UID from *parts* (e.g. a job id and an object role).

    The same parts always give the same UID, so a retried job re-emits the
    same SOP Instance UIDs and a PACS treats the re-send as a replacement.
    """
    u = uuid.uuid5(_NAMESPACE, "\x1f".join(parts))
    return f"{UID_ROOT}{u.int}"


def patient_key(header: object) -> str | None:
    """A one-way key for "the same patient" (trends, lesion tracking) that is not the patient ID itself.

    *header* is anything with ``get`` (a pydicom Dataset, a header dict);
    None without a Patient ID.
    """
    import hashlib

    get = getattr(header, "get", None)
    pid = str(get("PatientID", "") or "").strip() if get is not None else ""
    if not pid:
        return None
    issuer = str(get("IssuerOfPatientID", "") or "").strip()  # type: ignore[misc]
    return hashlib.sha256(f"{issuer}|{pid}".encode()).hexdigest()


def patient_key_of(path: object) -> str | None:
    """:func:`patient_key` of a DICOM file's header (None when unreadable or without a Patient ID)."""
    import pydicom

    try:
        return patient_key(pydicom.dcmread(str(path), stop_before_pixels=True,
                                           specific_tags=["PatientID", "IssuerOfPatientID"]))
    except Exception:  # noqa: BLE001 - an unreadable header simply has no key
        return None
