"""The few header elements the index needs, read straight from the data set's bytes.

``dcmread(..., specific_tags=...)`` builds a pydicom ``Dataset`` through the
whole file machinery (~0.3 ms per image, BENCHMARKS.md). The index needs
eight top-level elements, all near the start of the data set; this walks the
element headers (skipping values and sequences by their lengths) up to
(0020,0011) and decodes just those. Whenever the bytes are in any way
unusual — a multi-valued or non-ASCII value, a length that runs past the
end, an unknown structure — it returns ``None`` and the caller falls back to
pydicom, so its answer never differs from the pydicom path on valid data and
malformed data still gets pydicom's verdict.
"""

from __future__ import annotations

import struct

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

#: tag → (keyword, is a UID): the elements ``handle_store`` reads, in tag order.
WANTED: dict[int, tuple[str, bool]] = {
    0x00080016: ("SOPClassUID", True),
    0x00080018: ("SOPInstanceUID", True),
    0x00080050: ("AccessionNumber", False),
    0x00080060: ("Modality", False),
    0x0008103E: ("SeriesDescription", False),
    0x0020000D: ("StudyInstanceUID", True),
    0x0020000E: ("SeriesInstanceUID", True),
    0x00200011: ("SeriesNumber", False),
}
_LAST = max(WANTED)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 64


class _Unusual(Exception):
    """Leave this data set to pydicom."""


def read_header(raw: bytes, transfer_syntax: str) -> dict[str, str] | None:
    """The wanted elements present at the top level (keyword → text), or None to use pydicom."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None
    try:
        return _walk(raw, transfer_syntax)
    except (_Unusual, struct.error, IndexError):
        return None


def _walk(raw: bytes, transfer_syntax: str) -> dict[str, str]:
    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    implicit = transfer_syntax == ImplicitVRLittleEndian
    tag_fmt = struct.Struct(endian + "HH")
    u32 = struct.Struct(endian + "L")
    u16 = struct.Struct(endian + "H")
    size = len(raw)
    out: dict[str, str] = {}
    pos = 0
    depth = 0  # inside undefined-length sequences/items being skipped
    while pos + 8 <= size:
        group, element = tag_fmt.unpack_from(raw, pos)
        tag = group << 16 | element
        if group == 0xFFFE:
            if depth == 0:
                raise _Unusual("item tag at the top level")
            (length,) = u32.unpack_from(raw, pos + 4)
            pos += 8
            if element == 0xE000:
                if length != _UNDEFINED:
                    pos += length  # a defined-length item: skip it whole
            elif element == 0xE0DD:
                depth -= 1  # end of an undefined-length sequence
            elif element != 0xE00D:
                raise _Unusual("unknown delimiter")
            continue
        if depth == 0 and tag > _LAST:
            return out
        if implicit:
            (length,) = u32.unpack_from(raw, pos + 4)
            pos += 8
            vr = b""
        else:
            vr = raw[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                (length,) = u32.unpack_from(raw, pos + 8)
                pos += 12
            elif vr.isalpha() and vr.isupper():
                (length,) = u16.unpack_from(raw, pos + 6)
                pos += 8
            else:
                raise _Unusual("not an explicit VR")
        if length == _UNDEFINED:
            depth += 1
            if depth > _MAX_DEPTH:
                raise _Unusual("deep nesting")
            continue
        end = pos + length
        if end > size:
            raise _Unusual("value runs past the end")
        if depth == 0 and tag in WANTED:
            keyword = WANTED[tag][0]
            value = raw[pos:end]
            if b"\\" in value or (vr and vr == b"SQ"):
                raise _Unusual("multi-valued or a sequence")
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise _Unusual("non-ASCII: needs the character set") from exc
            out[keyword] = text.rstrip("\0 ")  # as pydicom: trailing padding is not significant
        pos = end
    if depth:
        raise _Unusual("sequence not closed")
    return out
