"""Checks on a received data set's raw bytes, before anything trusts them.

* ``strip_meta_groups`` drops command and file-meta elements (groups 0000 to
  0002) from the start of a data set. Written after radnode's own file meta
  they would be read back *as* file meta (pydicom, DCMTK and every other
  reader take contiguous group 0002 elements as the meta header), so a peer
  could forge the calling AE title or the transfer syntax of the stored file.
* ``inflate_bounded`` inflates a deflated data set (1.2.840.10008.1.2.1.99)
  in chunks into a file, stopping at a byte limit: a 1 MB message that
  inflates to 1 GB costs at most the limit on disk and 1 MB of memory.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

#: Explicit-VR encodings whose length field is 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_CHUNK = 1 << 20


class MalformedDataSet(ValueError):
    """The raw bytes do not follow the transfer syntax's element encoding."""


class InflatedTooLarge(ValueError):
    """A deflated data set inflates past the configured limit."""


def strip_meta_groups(raw: bytes, transfer_syntax: str) -> tuple[bytes, list[int]]:
    """Return *raw* without its leading group 0000-0002 elements, and their tags.

    Deflated data sets are left alone (their leading elements are inside the
    deflate stream, where no reader takes them for file meta).
    """
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return raw, []
    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    implicit = transfer_syntax == ImplicitVRLittleEndian
    tag_fmt = struct.Struct(endian + "HH")
    u32 = struct.Struct(endian + "L")
    u16 = struct.Struct(endian + "H")
    offset = 0
    tags: list[int] = []
    while offset + 8 <= len(raw):
        group, element = tag_fmt.unpack_from(raw, offset)
        if group > 0x0002:
            break
        if implicit:
            (length,) = u32.unpack_from(raw, offset + 4)
            header = 8
        elif raw[offset + 4 : offset + 6] in _LONG_VRS:
            if offset + 12 > len(raw):
                raise MalformedDataSet("truncated element header")
            (length,) = u32.unpack_from(raw, offset + 8)
            header = 12
        else:
            (length,) = u16.unpack_from(raw, offset + 6)
            header = 8
        if length == 0xFFFFFFFF:
            raise MalformedDataSet(f"undefined length on ({group:04X},{element:04X}) in a data set")
        offset += header + length
        if offset > len(raw):
            raise MalformedDataSet(f"({group:04X},{element:04X}) runs past the end of the data set")
        tags.append(group << 16 | element)
    if not tags:
        return raw, []
    return raw[offset:], tags


def inflate_bounded(raw: bytes, limit: int, out: Path, prefix: bytes = b"") -> int:
    """Write *prefix* then the inflated *raw* to *out*; return the inflated size.

    Raises InflatedTooLarge past *limit* inflated bytes (the partial file is
    the caller's to delete) and MalformedDataSet for a broken deflate stream.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        with out.open("wb") as f:
            f.write(prefix)
            data = raw
            while data:
                chunk = inflater.decompress(data, _CHUNK)
                total += len(chunk)
                if total > limit:
                    raise InflatedTooLarge(f"inflates to more than {limit} bytes")
                f.write(chunk)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
            tail = inflater.flush()
            total += len(tail)
            if total > limit:
                raise InflatedTooLarge(f"inflates to more than {limit} bytes")
            f.write(tail)
    except zlib.error as exc:
        raise MalformedDataSet(f"broken deflate stream: {exc}") from exc
    return total


class NestingTooDeep(ValueError):
    """Sequences are nested deeper than ``listener.max_nesting_depth``."""


_SEQ, _ITEM = 0, 1
_UNDEFINED = 0xFFFFFFFF


def check_nesting(raw: bytes, transfer_syntax: str, limit: int) -> int:
    """The deepest sequence nesting in *raw*; NestingTooDeep past *limit*.

    Walks element headers only (values are skipped by their lengths), so it
    costs microseconds per element whatever the pixel data's size. It is
    deliberately lenient: on bytes it cannot follow it stops and reports
    what it saw, leaving "cannot parse" to the reader, so that a valid data
    set is never refused by this check. Deflated data sets are not walked.
    """
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return 0
    from pydicom.datadict import dictionary_VR

    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    implicit = transfer_syntax == ImplicitVRLittleEndian
    tag_fmt = struct.Struct(endian + "HH")
    u32 = struct.Struct(endian + "L")
    u16 = struct.Struct(endian + "H")
    stack: list[tuple[int, int | None]] = []  # (kind, end offset or None if undefined)
    depth = deepest = 0
    pos, size = 0, len(raw)
    while pos + 8 <= size:
        while stack and stack[-1][1] is not None and pos >= stack[-1][1]:  # type: ignore[operator]
            if stack.pop()[0] == _SEQ:
                depth -= 1
        group, element = tag_fmt.unpack_from(raw, pos)
        if group == 0xFFFE:
            (length,) = u32.unpack_from(raw, pos + 4)
            pos += 8
            if element == 0xE000:
                stack.append((_ITEM, None if length == _UNDEFINED else pos + length))
            elif stack and stack[-1][1] is None:  # item or sequence delimiter
                if stack.pop()[0] == _SEQ:
                    depth -= 1
            continue
        if implicit:
            (length,) = u32.unpack_from(raw, pos + 4)
            pos += 8
            try:
                vr = dictionary_VR(group << 16 | element)
            except KeyError:
                vr = "UN"
        else:
            vr_bytes = raw[pos + 4 : pos + 6]
            vr = vr_bytes.decode("latin-1")
            if vr_bytes in _LONG_VRS:
                if pos + 12 > size:
                    return deepest
                (length,) = u32.unpack_from(raw, pos + 8)
                pos += 12
            else:
                (length,) = u16.unpack_from(raw, pos + 6)
                pos += 8
        if (group, element) == (0x7FE0, 0x0010) and length == _UNDEFINED:
            return deepest  # encapsulated pixel data: fragments, not elements; nothing nests after it
        if vr == "SQ" or length == _UNDEFINED:
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                raise NestingTooDeep(f"sequences nested more than {limit} deep")
            stack.append((_SEQ, None if length == _UNDEFINED else pos + length))
            continue
        pos += length
    return deepest
