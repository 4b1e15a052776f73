"""C-STORE requests served on the DUL thread, their command sets read and written by hand.

Why this exists: after the event-driven reactors (``listener/reactor.py``)
most of the listener's CPU per image was pynetdicom's generic DIMSE path,
not radnode's work: the command set decoded into a pydicom ``Dataset``, a
``C_STORE`` primitive built with validating setters, two thread hand-offs
(DUL thread → association thread for the request, back for the response),
and the response encoded through pydicom's writer (BENCHMARKS.md, issue 18).
For a plain C-STORE none of that carries information: the command set is a
handful of fixed elements in Implicit VR Little Endian (PS3.7 9.3.1, E.1)
and the response is seven elements.

What is served here, on the thread that read the PDU: a C-STORE-RQ whose
command holds only the elements PS3.7 allows in one, all well formed (valid
UIDs, SOP class equal to the accepted presentation context's abstract
syntax, a data set announced) on an established association. The bound
``EVT_C_STORE`` handler (radnode's ``handle_store``) is called with a small
event carrying what it reads; its status goes back as a C-STORE-RSP
P-DATA-TF written straight to the socket.

Everything else — another command, a malformed one, anything unexpected —
is handed unchanged, PDV by PDV, to pynetdicom's ``receive_primitive``, so
radnode's checks in ``handle_dimse_recv`` and pynetdicom's own behaviour
apply as before. The fast path does not fire ``EVT_DIMSE_RECV``/``SENT`` or
``EVT_PDU_*`` notifications for the messages it serves (radnode binds none
that need them). Like ``reactor.py`` this is a carried optimisation of
pynetdicom: drop it if upstream's DIMSE path gets as cheap.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog
from pynetdicom import evt
from pynetdicom.pdu_primitives import P_DATA

from radnode.uids import is_valid_uid

log = structlog.get_logger(__name__)

_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
#: Unable to process (pynetdicom's answer when a C-STORE handler raises).
HANDLER_FAILED = 0xC211
#: Status 0xC002 as pynetdicom answers a handler's return value it cannot read.
INVALID_STATUS = 0xC002

#: Command elements a C-STORE-RQ may carry (PS3.7 9.3.1.1), by element number in group 0000.
_RQ_ELEMENTS = {
    0x0000: "CommandGroupLength",
    0x0002: "AffectedSOPClassUID",
    0x0100: "CommandField",
    0x0110: "MessageID",
    0x0700: "Priority",
    0x0800: "CommandDataSetType",
    0x1000: "AffectedSOPInstanceUID",
    0x1030: "MoveOriginatorApplicationEntityTitle",
    0x1031: "MoveOriginatorMessageID",
}
_US_ELEMENTS = {0x0100, 0x0110, 0x0700, 0x0800, 0x1031}


@dataclass(frozen=True)
class StoreCommand:
    """The parts of a C-STORE-RQ command set the SCP answers with."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


def read_command(encoded: bytes) -> dict[int, bytes] | None:
    """Element number → value of an Implicit VR LE group-0000 command set; None if malformed.

    Malformed: an element of another group, a length past the end, an element twice,
    elements out of order (PS3.5 7.1: ascending tag order).
    """
    out: dict[int, bytes] = {}
    offset, end, last = 0, len(encoded), -1
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = _ELEMENT.unpack_from(encoded, offset)
        offset += 8
        if group != 0 or element <= last or length > end - offset:
            return None
        out[element] = encoded[offset:offset + length]
        offset += length
        last = element
    return out


def _us(value: bytes | None) -> int | None:
    return _US.unpack(value)[0] if value is not None and len(value) == 2 else None


def _uid(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text.rstrip("\0 ")


def store_command(elements: dict[int, bytes], abstract_syntax: str) -> StoreCommand | None:
    """The command as a plain C-STORE-RQ the fast path may serve, else None (pynetdicom serves it)."""
    if not set(elements) <= _RQ_ELEMENTS.keys():
        return None
    for element in _US_ELEMENTS & elements.keys():
        if _us(elements[element]) is None:
            return None
    if _us(elements.get(0x0100)) != C_STORE_RQ:
        return None
    data_set_type = _us(elements.get(0x0800))
    message_id = _us(elements.get(0x0110))
    if data_set_type is None or data_set_type == NO_DATA_SET or message_id is None:
        return None
    group_length = elements.get(0x0000)
    if group_length is not None and len(group_length) != 4:
        return None
    sop_class = _uid(elements.get(0x0002))
    sop_instance = _uid(elements.get(0x1000))
    if not sop_class or not sop_instance or not is_valid_uid(sop_class) or not is_valid_uid(sop_instance):
        return None
    if sop_class != abstract_syntax:
        return None
    return StoreCommand(message_id, sop_class, sop_instance)


def _ui(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"
    return _ELEMENT.pack(0, element, len(value)) + value


def _us_element(element: int, value: int) -> bytes:
    return _ELEMENT.pack(0, element, 2) + _US.pack(value)


def encode_response(command: StoreCommand, status: int) -> bytes:
    """C-STORE-RSP command set (PS3.7 9.3.1.2), Implicit VR Little Endian, with its group length."""
    body = b"".join((
        _ui(0x0002, command.sop_class_uid),
        _us_element(0x0100, C_STORE_RSP),
        _us_element(0x0120, command.message_id),
        _us_element(0x0800, NO_DATA_SET),
        _us_element(0x0900, status),
        _ui(0x1000, command.sop_instance_uid),
    ))
    return _ELEMENT.pack(0, 0x0000, 4) + _UL.pack(len(body)) + body


def response_pdu(context_id: int, command_set: bytes) -> bytes:
    """One P-DATA-TF holding the whole command set as its last command fragment (control 0x03)."""
    pdv = _PDV_HEADER.pack(len(command_set) + 2, context_id, 0x03) + command_set
    return _PDU_HEADER.pack(0x04, 0, len(pdv)) + pdv


class Tally:
    """Messages this process served on the fast path and handed to pynetdicom (benchmarks, tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.served = 0
        self.forwarded = 0

    def add(self, *, served: int = 0, forwarded: int = 0) -> None:
        with self._lock:
            self.served += served
            self.forwarded += forwarded


TALLY = Tally()


# --------------------------------------------------------------------------
# What the handler sees
# --------------------------------------------------------------------------

class _DataSet:
    """The received data set bytes behind the ``getvalue()`` handle_store calls (as on pynetdicom's BytesIO)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def getvalue(self) -> bytes:
        return self._value


@dataclass
class _Request:
    MessageID: int
    AffectedSOPClassUID: str
    AffectedSOPInstanceUID: str
    DataSet: _DataSet
    context_id: int


@dataclass
class _Context:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass
class StoreEvent:
    """What an ``EVT_C_STORE`` handler reads from pynetdicom's ``Event``, for the fast path.

    ``after_response``: work the handler leaves for after the answer is sent
    (radnode's: placing a journaled file, queuing its index record), run in
    order on this thread before the next PDU is read — so before a release;
    a step that raises ends the list (the later ones depend on it).
    """

    assoc: Any
    request: _Request
    context: _Context
    event: Any = evt.EVT_C_STORE
    after_response: list[Callable[[], None]] = field(default_factory=list)


def _status_of(value: Any) -> int:
    """A handler's return as pynetdicom's StorageServiceClass reads it: an int, or a Dataset's Status."""
    if isinstance(value, int):
        return int(value)
    status = getattr(value, "Status", None)
    return int(status) if isinstance(status, int) else INVALID_STATUS


# --------------------------------------------------------------------------
# The receiving side
# --------------------------------------------------------------------------

class FastStoreReceiver:
    """Replaces ``assoc.dimse.receive_primitive`` (called by the DUL's DT-2 action for each P-DATA).

    States: between messages (``_mode`` None, collecting command fragments),
    ``"fast"`` (a served C-STORE's data set arriving), ``"slow"`` (a message
    pynetdicom serves: every PDV forwarded until pynetdicom has completed it).
    """

    def __init__(self, assoc: Any, fallback: Callable[[P_DATA], None]) -> None:
        self._assoc = assoc
        self._fallback = fallback
        self._mode: str | None = None
        self._command_pdvs: list[tuple[int, bytes]] = []
        self._data: list[memoryview] = []
        self._command: StoreCommand | None = None
        self._context_id = 0

    def __call__(self, primitive: P_DATA) -> None:
        for context_id, pdv in primitive.presentation_data_value_list:
            self._pdv(int(context_id), pdv)

    def _forward(self, context_id: int, pdv: bytes) -> None:
        single = P_DATA()
        single.presentation_data_value_list = [[context_id, pdv]]  # type: ignore[list-item]  # pynetdicom checks for lists
        self._fallback(single)
        if self._assoc.dimse.message is None:  # pynetdicom completed (or dropped) the message
            self._mode = None

    def _pdv(self, context_id: int, pdv: bytes) -> None:
        if not pdv:
            return self._forward(context_id, pdv)
        control = pdv[0]
        is_command, is_last = bool(control & 0x01), bool(control & 0x02)
        if self._mode == "slow":
            return self._forward(context_id, pdv)
        if self._mode == "fast":
            if is_command:  # a new command before the data set ended: not DICOM (PS3.8 E.2)
                self._reset()
                self._assoc.dul.event_queue.put("Evt19")
                return None
            self._data.append(memoryview(pdv)[1:])
            if is_last:
                self._serve()
            return None
        if not is_command:  # a data fragment without a command: pynetdicom's to judge
            self._mode = "slow"
            return self._forward(context_id, pdv)
        self._command_pdvs.append((context_id, pdv))
        if is_last:
            self._decide(context_id)
        return None

    def _decide(self, context_id: int) -> None:
        pdvs, self._command_pdvs = self._command_pdvs, []
        command = None
        cx = self._assoc._accepted_cx.get(context_id)
        if cx is not None and self._assoc.is_established:
            elements = read_command(b"".join(p[1:] for _, p in pdvs))
            if elements is not None:
                command = store_command(elements, str(cx.abstract_syntax))
        if command is None or not self._handler_bound():
            TALLY.add(forwarded=1)
            self._mode = "slow"
            for cid, pdv in pdvs:
                self._forward(cid, pdv)  # the last one may complete it (no data set): back to None
            return
        self._mode, self._command, self._context_id = "fast", command, context_id
        self._data = []

    def _handler_bound(self) -> bool:
        handler, _args = self._assoc.get_handlers(evt.EVT_C_STORE) or (None, None)
        return handler is not None

    def _reset(self) -> None:
        self._mode, self._command, self._data, self._command_pdvs = None, None, [], []

    def _serve(self) -> None:
        command, context_id, data = self._command, self._context_id, self._data
        self._reset()
        assert command is not None
        assoc = self._assoc
        cx = assoc._accepted_cx[context_id]
        event = StoreEvent(
            assoc,
            _Request(command.message_id, command.sop_class_uid, command.sop_instance_uid,
                     _DataSet(b"".join(data)), context_id),
            _Context(context_id, str(cx.abstract_syntax), str(cx.transfer_syntax[0])),
        )
        del data
        TALLY.add(served=1)
        handler, args = assoc.get_handlers(evt.EVT_C_STORE)
        try:
            status = _status_of(handler(event, *(args or [])))
        except Exception:  # noqa: BLE001 - as pynetdicom: a raising handler answers 0xC211
            log.exception("c-store handler failed", status="0xC211")
            status = HANDLER_FAILED
        try:
            if assoc.is_established:  # else aborted or released while storing: nothing to answer
                assoc.dul.socket.send(response_pdu(context_id, encode_response(command, status)))
        finally:
            for work in event.after_response:  # also when the answer could not go: the instance is durable
                try:
                    work()
                except Exception:  # noqa: BLE001 - later steps depend on earlier ones (no index record without its file)
                    log.exception("c-store follow-up failed; the rest of it is left to the next start")
                    break


def install(assoc: Any) -> FastStoreReceiver:
    """Serve plain C-STOREs of *assoc* on its DUL thread (before the association starts)."""
    receiver = FastStoreReceiver(assoc, assoc.dimse.receive_primitive)
    assoc.dimse.receive_primitive = receiver
    return receiver
