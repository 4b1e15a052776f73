"""HL7 v2.5.1 destinations: results into the EMR as ORU^R01 over MLLP.

``{hl7: "mllp://host:port"}`` (``mllps://`` for TLS). The message follows
HL7 v2.5.1 chapter 7 and the shape IHE Radiology's AI Results (AIR) profile
gives an HL7 v2 export:

* MSH with radnode's and the receiver's application/facility
  (``delivery.hl7``), message type ``ORU^R01^ORU_R01``, version 2.5.1, and a
  message control id derived from the job id (a retried job re-sends the same
  id, so a receiver can drop the duplicate);
* PID (patient identifier with its issuer, name, birth date, sex), PV1;
* ORC and OBR, with the accession number as the filler order number and the
  study's procedure as the universal service identifier;
* one OBX per measurement, value type NM with its UCUM unit (CWE with coding
  system ``UCUM``), the measurement's name as a local code and its SNOMED/DCM
  code as the alternate identifier;
* one OBX per finding (ST ``present``/``absent``), abnormal flag ``AA``
  (critical abnormal, HL7 table 0078) when the finding is critical;
* the PDF report as one encapsulated-data OBX (ED, ``^AP^PDF^Base64^…``).

Messages are built with the `hl7` package's parser as the check that what
leaves is well-formed, and sent with its MLLP stream client. The ACK decides:
``AA``/``CA`` delivered, ``AE``/``AR`` (and ``CE``/``CR``) failed with MSA-3 /
ERR as the reason, no ACK within ``delivery.hl7.ack_timeout`` is a timeout
(retried like any unavailable peer).
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hl7
import structlog
from hl7.mllp import open_hl7_connection

from radnode.model.delivery import ResultPackage
from radnode.model.jobs import Destination
from radnode.peers.dicom import EchoResult, FailureKind, PeerUnavailable, SendReport
from radnode.settings import DeliverySettings, Hl7Settings

log = structlog.get_logger(__name__)

MLLP_URL = re.compile(r"^mllps?://[^\s/:]+:\d{1,5}/?$")

#: Abnormal flag for a critical finding (HL7 table 0078: "critical abnormal").
CRITICAL_FLAG = "AA"
ACCEPTED = frozenset({"AA", "CA"})


@dataclass(frozen=True)
class MllpAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> "MllpAddress":
        if not MLLP_URL.match(url):
            raise ValueError(f"not an MLLP address (mllp://host:port or mllps://host:port): {url!r}")
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        return cls(parts.hostname, parts.port, parts.scheme == "mllps")


def escape(value: object) -> str:
    """HL7 v2 escaping of the delimiters (2.7.4) and of line breaks."""
    text = str(value)
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("~", "\\R\\").replace("&", "\\T\\")
    return out.replace("\r\n", "\\.br\\").replace("\n", "\\.br\\").replace("\r", "\\.br\\")


def _name(dicom_name: str) -> str:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``) as an HL7 XPN/XCN:
    the component order is the same, each component escaped."""
    return "^".join(escape(part) for part in str(dicom_name).split("^")[:5])


def _number(value: float) -> str:
    """The shortest text that reads back as the same float (``repr``), ints as ints."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def control_id(package: ResultPackage) -> str:
    """MSH-10 (ST, at most 20 characters): the same for every try of a job."""
    return package.job_id[:20]


def build_oru(package: ResultPackage, settings: Hl7Settings, *, now: datetime | None = None) -> hl7.Message:
    """The ORU^R01 for *package*, parsed back by the `hl7` package (well-formed or ValueError)."""
    if not package.patient.patient_id:
        raise ValueError("patient.patient_id: an ORU^R01 needs the patient identifier (PID-3)")
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    observed = (package.study_date + package.study_time[:6]) if package.study_date else stamp
    p = package.patient
    pid3 = escape(p.patient_id) + (f"^^^{escape(p.issuer)}" if p.issuer else "")
    accession = escape(package.accession)
    procedure = f"{escape(package.application)}^{escape(package.study_description or package.application + ' AI analysis')}^L"
    segments = [
        "|".join(["MSH", "^~\\&", escape(settings.sending_application), escape(settings.sending_facility),
                  escape(settings.receiving_application), escape(settings.receiving_facility), stamp, "",
                  "ORU^R01^ORU_R01", control_id(package), "P", "2.5.1", "", "", "AL", "NE"]),
        "|".join(["PID", "1", "", pid3, "", _name(p.name), "", escape(p.birth_date), escape(p.sex)]),
        "|".join(["PV1", "1", "N"]),
        "|".join(["ORC", "RE", "", accession, "", "CM"]),
        "|".join(["OBR", "1", "", accession, procedure, "", "", observed, "", "", "", "", "", "", "", "",
                  _name(package.referring_physician), "", "", "", "", "", stamp, "", "RAD", "F"]),
    ]
    n = 0
    for m in package.measurements:
        n += 1
        ident = f"{escape(m.name)}^{escape(m.name.replace('_', ' '))}^L"
        if m.code:
            ident += f"^{escape(m.code[0])}^{escape(m.code[2])}^{escape(m.code[1])}"
        unit = f"{escape(m.unit)}^{escape(m.unit)}^UCUM"
        segments.append("|".join(["OBX", str(n), "NM", ident, str(n), _number(m.value), unit, "", "", "", "", "F", "", "", observed]))
    for f in package.findings:
        n += 1
        flag = CRITICAL_FLAG if f.critical and f.present else ""
        segments.append("|".join(["OBX", str(n), "ST", f"{escape(f.name)}^{escape(f.name.replace('_', ' '))}^L", str(n),
                                  "present" if f.present else "absent", "", "", flag, "", "", "F", "", "", observed]))
    if package.pdf:
        n += 1
        data = base64.b64encode(package.pdf).decode("ascii")
        segments.append("|".join(["OBX", str(n), "ED", "PDF^Report^L", str(n), f"{escape(settings.sending_application)}^AP^PDF^Base64^{data}",
                                  "", "", "", "", "", "F", "", "", observed]))
    text = "\r".join(segments)
    message = hl7.parse(text)
    if str(message.segment("MSH")[9]) != "ORU^R01^ORU_R01":  # the parse saw our delimiters as we meant them
        raise ValueError("ORU^R01 did not read back")
    return message


@dataclass(frozen=True)
class Ack:
    code: str
    control_id: str
    text: str


def read_ack(message: hl7.Message) -> Ack:
    """MSA-1 (code), MSA-2 (the message acknowledged), MSA-3 / ERR as the reason."""
    msa = message.segment("MSA")
    code = str(msa[1]) if len(msa) > 1 else ""
    ref = str(msa[2]) if len(msa) > 2 else ""
    text = str(msa[3]) if len(msa) > 3 else ""
    if not text:
        try:
            err = message.segment("ERR")
            text = " ".join(str(f) for f in err[1:] if str(f))
        except KeyError:
            pass
    return Ack(code, ref, text)


async def _exchange(address: MllpAddress, payload: str, timeout: float, context: ssl.SSLContext | None) -> hl7.Message:
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(address.host, address.port, ssl=context, encoding="utf-8",
                            server_hostname=address.host if context else None),
        timeout,
    )
    try:
        writer.writeblock(payload.encode("utf-8"))
        await writer.drain()
        return await asyncio.wait_for(reader.readmessage(), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ConnectionError):
            pass


def _context(address: MllpAddress, settings: Hl7Settings) -> ssl.SSLContext | None:
    if not address.tls:
        return None
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


def _unavailable(where: str, exc: BaseException, timeout: float) -> PeerUnavailable:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return PeerUnavailable(f"{where} sent no ACK within {timeout:g} s", FailureKind.STOPPED_ANSWERING, where)
    if isinstance(exc, ConnectionRefusedError):
        return PeerUnavailable(f"{where}: connection refused — is the HL7 receiver listening there?", FailureKind.REFUSED, where)
    if isinstance(exc, socket.gaierror):
        return PeerUnavailable(f"{where}: host name does not resolve ({exc})", FailureKind.UNRESOLVED, where)
    if isinstance(exc, ssl.SSLError):
        return PeerUnavailable(f"TLS with {where} failed: {exc} — check its certificate or delivery.hl7.ca_file", FailureKind.REJECTED, where)
    if isinstance(exc, asyncio.IncompleteReadError):
        return PeerUnavailable(f"{where} closed the connection without an ACK", FailureKind.STOPPED_ANSWERING, where)
    return PeerUnavailable(f"{where}: {exc}", FailureKind.ABORTED, where)


def send_oru(address: MllpAddress, message: hl7.Message, settings: Hl7Settings) -> Ack:
    """Send one message and read its ACK; PeerUnavailable for anything but AA/CA."""
    where = f"HL7 receiver {address.host}:{address.port}"
    ours = str(message.segment("MSH")[10])
    try:
        reply = asyncio.run(_exchange(address, str(message), settings.ack_timeout, _context(address, settings)))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        raise _unavailable(where, exc, settings.ack_timeout) from exc
    except Exception as exc:  # a reply that is not HL7 (parse errors from the hl7 package)
        raise PeerUnavailable(f"{where} answered something that is not an HL7 ACK: {exc}", FailureKind.STATUS, where) from exc
    ack = read_ack(reply)
    if ack.code not in ACCEPTED:
        meaning = {"AE": "application error", "AR": "application reject", "CE": "commit error", "CR": "commit reject"}.get(ack.code, "unknown ACK code")
        raise PeerUnavailable(f"{where} answered {ack.code or '(no MSA-1)'} ({meaning}): {ack.text or 'no reason given'}", FailureKind.STATUS, where)
    if ack.control_id and ack.control_id != ours:
        raise PeerUnavailable(f"{where} acknowledged message {ack.control_id!r}, not {ours!r}", FailureKind.STATUS, where)
    return ack


class Hl7Destination:
    """An ``hl7`` destination: one ORU^R01 per job, acknowledged by the receiver."""

    confirms = False

    def __init__(self, dest: Destination, caller: Any) -> None:
        if dest.hl7 is None:
            raise ValueError(f"destination {dest.name!r} is not an HL7 destination")
        self.name = dest.name
        self.label = dest.label
        self.address = MllpAddress.parse(dest.hl7)
        delivery: DeliverySettings = caller.delivery or DeliverySettings()
        self.settings = delivery.hl7
        self.last_ack: Ack | None = None
        self.acknowledgement = ""

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        if package is None:
            raise ValueError("an HL7 destination needs the result package")
        report = SendReport()
        message = build_oru(package, self.settings)
        msg_id = control_id(package)
        if msg_id in done:
            return report
        ack = send_oru(self.address, message, self.settings)
        self.last_ack = ack
        self.acknowledgement = f"HL7 ACK {ack.code} for message {ack.control_id or msg_id}" + (f": {ack.text}" if ack.text else "")
        report.sent.append(msg_id)
        log.info("ORU^R01 acknowledged", destination=self.name, ack=ack.code, observations=len(package.measurements))
        return report

    def confirm(self, study_instance_uid: str, series_instance_uids: Any) -> dict[str, int]:
        return {}

    def check(self) -> EchoResult:
        """Open (and, for mllps, secure) a connection to the receiver, then close it."""
        start = time.monotonic()
        where = f"HL7 receiver {self.address.host}:{self.address.port}"

        async def probe() -> None:
            _, writer = await asyncio.wait_for(
                open_hl7_connection(self.address.host, self.address.port, ssl=_context(self.address, self.settings),
                                    server_hostname=self.address.host if self.address.tls else None),
                self.settings.ack_timeout,
            )
            writer.close()

        try:
            asyncio.run(probe())
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            failure = _unavailable(where, exc, self.settings.ack_timeout)
            return EchoResult(False, None, str(failure), round((time.monotonic() - start) * 1000, 1), failure.kind)
        return EchoResult(True, None, f"MLLP connection to {where} opened" + (" (TLS)" if self.address.tls else ""), round((time.monotonic() - start) * 1000, 1))
