"""A DICOM upper-layer client that encodes every byte itself.

Why: a hostile-input test must send what no well-behaved library will encode
(a 60,000-character UID in a command, a PDU header claiming 200 MB followed
by silence, a data set of 0 bytes, group 0002 inside a data set). pynetdicom
and DCMTK validate their own output, so this client builds A-ASSOCIATE-RQ,
P-DATA-TF and command sets by hand (PS3.8 9.3, PS3.7 6.3 and E) over a plain
socket, and reads answers with a timeout, so "no answer" is a test failure
rather than a hang.
"""

from __future__ import annotations

import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode().ljust(16)[:16]


def associate_rq(called: str, calling: str, contexts: list[tuple[int, str, list[str]]], max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2)."""
    items = [_item(0x10, APP_CONTEXT)]
    for ctx_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items.append(_item(0x20, struct.pack(">BBBB", ctx_id, 0, 0, 0) + sub))
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.8.498.9.9")
    items.append(_item(0x50, user))
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\x00" * 32 + b"".join(items)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _element(group: int, elem: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHL", group, elem, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + (b"\x00" if len(raw) % 2 else b"")


def command_set(fields: list[tuple[int, bytes]]) -> bytes:
    """An implicit-VR little-endian command set with its group length first."""
    body = b"".join(_element(0x0000, e, v) for e, v in sorted(fields))
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def c_store_rq(sop_class: str, sop_uid: str, message_id: int = 1, has_dataset: bool = True) -> bytes:
    return command_set([
        (0x0002, _uid(sop_class)),
        (0x0100, struct.pack("<H", 0x0001)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0700, struct.pack("<H", 2)),
        (0x0800, struct.pack("<H", 0x0000 if has_dataset else 0x0101)),
        (0x1000, _uid(sop_uid)),
    ])


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set([
        (0x0002, _uid(VERIFICATION)),
        (0x0100, struct.pack("<H", 0x0030)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0800, struct.pack("<H", 0x0101)),
    ])


def encode_dataset(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """A data set's bytes in *transfer_syntax* (deflated: explicit VR LE, raw-deflated)."""
    raw = encode(ds, transfer_syntax == ImplicitVRLittleEndian, True)
    assert raw is not None
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = comp.compress(raw) + comp.flush()
    return raw


@dataclass
class RawAssociation:
    host: str
    port: int
    called: str = "RADNODE"
    calling: str = "RAWSCU"
    contexts: list[tuple[int, str, list[str]]] = field(
        default_factory=lambda: [(1, VERIFICATION, [ImplicitVRLittleEndian]), (3, MR_STORAGE, [ExplicitVRLittleEndian])]
    )
    timeout: float = 10.0
    source: str | None = None

    def __post_init__(self) -> None:
        self.sock = connect(self.host, self.port, self.source, self.timeout)
        self.accepted: dict[int, str] = {}

    def establish(self) -> bool:
        self.sock.sendall(associate_rq(self.called, self.calling, self.contexts))
        pdu_type, body = self.read_pdu()
        if pdu_type != 0x02:
            return False
        offset = 68
        while offset + 4 <= len(body):
            itype, _, ilen = struct.unpack_from(">BBH", body, offset)
            if itype == 0x21 and body[offset + 6] == 0:
                ctx_id = body[offset + 4]
                sub = body[offset + 8 : offset + 4 + ilen]
                ts = sub[4:].rstrip(b"\x00").decode()
                self.accepted[ctx_id] = ts
            offset += 4 + ilen
        return True

    def read_pdu(self, timeout: float | None = None) -> tuple[int, bytes]:
        self.sock.settimeout(timeout or self.timeout)
        header = _recv_exact(self.sock, 6)
        pdu_type, _, length = struct.unpack(">BBL", header)
        return pdu_type, _recv_exact(self.sock, length)

    def send_pdata(self, ctx_id: int, data: bytes, *, command: bool, fragment: int = 16000) -> None:
        chunks = [data[i : i + fragment] for i in range(0, len(data), fragment)] or [b""]
        for i, chunk in enumerate(chunks):
            control = (0x01 if command else 0x00) | (0x02 if i == len(chunks) - 1 else 0x00)
            pdv = struct.pack(">LBB", len(chunk) + 2, ctx_id, control) + chunk
            self.sock.sendall(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)

    def read_status(self, timeout: float | None = None) -> int:
        """The Status (0000,0900) of the next response command; raises TimeoutError if none comes."""
        command = b""
        while True:
            pdu_type, body = self.read_pdu(timeout)
            if pdu_type != 0x04:
                raise ConnectionError(f"PDU 0x{pdu_type:02X} instead of a response")
            offset = 0
            last = False
            while offset < len(body):
                (ilen,) = struct.unpack_from(">L", body, offset)
                control = body[offset + 5]
                if control & 0x01:
                    command += body[offset + 6 : offset + 4 + ilen]
                    last = bool(control & 0x02)
                offset += 4 + ilen
            if last:
                break
        offset = 0
        while offset + 8 <= len(command):
            group, elem, length = struct.unpack_from("<HHL", command, offset)
            if (group, elem) == (0x0000, 0x0900):
                return int(struct.unpack_from("<H", command, offset + 8)[0])
            offset += 8 + length
        raise ValueError("response without a status")

    def c_echo(self, ctx_id: int = 1) -> int:
        self.send_pdata(ctx_id, c_echo_rq(), command=True)
        return self.read_status()

    def c_store(self, dataset: bytes, *, sop_uid: str, sop_class: str = MR_STORAGE, ctx_id: int = 3, fragment: int = 16000) -> int:
        self.send_pdata(ctx_id, c_store_rq(sop_class, sop_uid), command=True)
        self.send_pdata(ctx_id, dataset, command=False, fragment=fragment)
        return self.read_status()

    def release(self) -> None:
        try:
            self.sock.sendall(struct.pack(">BBL", 0x05, 0, 4) + b"\x00" * 4)
            self.read_pdu(timeout=5)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def connect(host: str, port: int, source: str | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf.extend(chunk)
    return bytes(buf)


def is_closed(sock: socket.socket, wait: float) -> bool:
    """Whether the peer closed *sock* within *wait* seconds (EOF or reset)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
    return False
