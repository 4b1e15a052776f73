"""Delivery status notifications: what a bounce says, and which job it is about.

A bounce that arrives after the SMTP server accepted a result mail is a
delivery status notification (DSN, RFC 3464): a ``multipart/report;
report-type=delivery-status`` message (RFC 6522) sent to the envelope sender.
Its ``message/delivery-status`` part holds one block of per-message fields
(``Reporting-MTA``, ``Arrival-Date``) and one block per recipient
(``Final-Recipient``, ``Original-Recipient``, ``Action``, ``Status``,
``Diagnostic-Code``); a third part usually returns the original message or
its headers (``message/rfc822``, ``text/rfc822-headers``).

:func:`parse_dsn` reads one message with the standard library's ``email``
package and returns ``None`` for anything that is not a DSN.
:meth:`DeliveryReport.job_reference` names the job: the VERP address the DSN
was delivered to (:func:`radnode.peers.mail.verp_address`), else the returned
headers' ``X-Radnode-Job``, else the job id part of the returned
``Message-ID`` (radnode writes the first 16 characters of the job id into it).
Nothing here touches the job store.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from email.utils import getaddresses

#: Headers that tell, after local delivery, which address a message was delivered to.
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")

_JOB_ID = re.compile(r"^[0-9a-f]{16,64}$")
#: ``make_msgid(idstring=job_id[:16])`` → ``<time.pid.random.<16 hex>@domain>``.
_MSGID_JOB = re.compile(r"\.([0-9a-f]{16})@", re.IGNORECASE)


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 2.3)."""

    #: The address radnode sent to: ``Original-Recipient`` when given, else ``Final-Recipient``.
    recipient: str
    final_recipient: str
    #: ``failed``, ``delayed``, ``delivered``, ``relayed`` or ``expanded``.
    action: str
    #: The enhanced status code (RFC 3463), e.g. ``5.1.1``.
    status: str
    #: ``Diagnostic-Code`` without its type, e.g. ``550 5.1.1 user unknown``.
    diagnostic: str = ""
    remote_mta: str = ""

    @property
    def failed(self) -> bool:
        return self.action == "failed"


@dataclass(frozen=True)
class JobReference:
    """How a DSN names its job: ``value`` is a job id, or (``via == "message-id"``) a prefix of one."""

    value: str
    via: str


@dataclass(frozen=True)
class DeliveryReport:
    """One parsed DSN."""

    #: The DSN's own ``Message-ID``, else a digest of its bytes: the key that keeps it from counting twice.
    dsn_id: str
    reporting_mta: str
    recipients: tuple[RecipientStatus, ...]
    #: Addresses the DSN itself was delivered to (``Delivered-To``, ``X-Original-To``, ``To`` …).
    delivered_to: tuple[str, ...]
    #: ``X-Radnode-Job`` of the returned message, when its headers came back.
    returned_job: str = ""
    #: ``Message-ID`` of the returned message, when its headers came back.
    returned_message_id: str = ""

    def job_reference(self, bounce_address: str | None) -> JobReference | None:
        """The job this DSN is about, by the most reliable clue present; None when none."""
        if bounce_address:
            for address in self.delivered_to:
                job = job_from_verp(address, bounce_address)
                if job:
                    return JobReference(job, "verp")
        if _JOB_ID.match(self.returned_job.lower()):
            return JobReference(self.returned_job.lower(), "x-radnode-job")
        found = _MSGID_JOB.search(self.returned_message_id)
        if found:
            return JobReference(found.group(1).lower(), "message-id")
        return None


def job_from_verp(address: str, bounce_address: str) -> str | None:
    """The job id in *address* when it is ``<local>+<job id>@<domain>`` of *bounce_address*; else None.

    >>> job_from_verp("bounces+0123456789abcdef0123456789abcdef@Example.org", "bounces@example.org")
    '0123456789abcdef0123456789abcdef'
    >>> job_from_verp("someone@example.org", "bounces@example.org") is None
    True
    """
    local, _, domain = address.strip().strip("<>").rpartition("@")
    base_local, _, base_domain = bounce_address.rpartition("@")
    if domain.lower() != base_domain.lower():
        return None
    prefix = base_local.lower() + "+"
    if not local.lower().startswith(prefix):
        return None
    tag = local[len(prefix):].lower()
    return tag if _JOB_ID.match(tag) else None


def _address(value: object) -> str:
    """``rfc822; Someone@Example.org`` → ``someone@example.org`` (RFC 3464 2.3.1: address-type; address)."""
    text = " ".join(str(value or "").split())
    _, _, address = text.rpartition(";")
    return address.strip().strip("<>").lower()


def _diagnostic(value: object) -> str:
    """``smtp; 550 5.1.1 user unknown`` → ``550 5.1.1 user unknown`` (folded lines joined)."""
    text = " ".join(str(value or "").split())
    kind, sep, rest = text.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else text


def _first_token(value: object) -> str:
    parts = str(value or "").split()
    return parts[0] if parts else ""


def is_dsn(msg: Message) -> bool:
    """A ``multipart/report`` with a ``message/delivery-status`` part (RFC 6522, RFC 3464)."""
    if msg.get_content_type() != "multipart/report":
        return False
    return any(part.get_content_type() in ("message/delivery-status", "message/global-delivery-status") for part in msg.walk())


def _parts(msg: Message) -> list[Message]:
    """The sub-messages of a multipart or ``message/*`` part (``get_payload`` returns a list there)."""
    payload = msg.get_payload() if msg.is_multipart() else []
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _status_blocks(part: Message) -> list[Message]:
    """The field blocks of a ``message/delivery-status`` part (RFC 3464 2.1)."""
    payload = part.get_payload()
    if isinstance(payload, str):  # message/global-delivery-status may arrive unparsed
        return [message_from_string(b, policy=policy.default) for b in re.split(r"\r?\n\r?\n", payload) if b.strip()]
    return [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []


def parse_dsn(raw: bytes) -> DeliveryReport | None:
    """The delivery report in *raw* (one RFC 5322 message); None when it is not a DSN."""
    msg = message_from_bytes(raw, policy=policy.default)
    if not is_dsn(msg):
        return None
    reporting_mta = ""
    recipients: list[RecipientStatus] = []
    returned: Message | None = None
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            for block in _status_blocks(part):
                if block.get("Final-Recipient") is None:
                    reporting_mta = reporting_mta or _address(block.get("Reporting-MTA"))
                    continue
                final = _address(block.get("Final-Recipient"))
                original = _address(block.get("Original-Recipient"))
                recipients.append(
                    RecipientStatus(
                        recipient=original or final,
                        final_recipient=final,
                        action=_first_token(block.get("Action")).lower(),
                        status=_first_token(block.get("Status")),
                        diagnostic=_diagnostic(block.get("Diagnostic-Code")),
                        remote_mta=_address(block.get("Remote-MTA")),
                    )
                )
        elif ctype in ("message/rfc822", "message/global") and returned is None:
            returned = next(iter(_parts(part)), None)
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers") and returned is None:
            headers = part.get_payload(decode=True)
            returned = message_from_bytes(headers.lstrip() if isinstance(headers, bytes) else b"", policy=policy.default)
    delivered_to = tuple(
        address.lower() for name in ENVELOPE_HEADERS for _, address in getaddresses([str(v) for v in msg.get_all(name, [])]) if address
    )
    message_id = " ".join(str(msg.get("Message-ID", "")).split())
    return DeliveryReport(
        dsn_id=message_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        reporting_mta=reporting_mta,
        recipients=tuple(recipients),
        delivered_to=delivered_to,
        returned_job=" ".join(str(returned.get("X-Radnode-Job", "")).split()) if returned is not None else "",
        returned_message_id=" ".join(str(returned.get("Message-ID", "")).split()) if returned is not None else "",
    )
