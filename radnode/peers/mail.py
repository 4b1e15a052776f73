"""E-mail destinations: results to clinicians over SMTP (RFC 5321).

``{email: [addresses]}`` names recipients; ``{email: referring}`` is the
study's Referring Physician, looked up in the directory file named by
``delivery.directory_file`` (a YAML mapping ``"Family^Given": address``).

The message is branded HTML with a plain-text alternative. With
``delivery.email_phi: true`` it carries the identifiers, the findings table
and the PDF report as an attachment; with ``false`` (the default) it carries
no patient data at all, only whether the result is critical and a link to
the job page behind login.

With ``delivery.smtp.bounce_address`` set, the envelope sender (MAIL FROM) is
a per-job VERP address, so that a bounce arriving later names its job
(:mod:`radnode.peers.dsn` reads it, :mod:`radnode.jobs.bounces` records it);
the header ``From`` stays ``delivery.smtp.sender``.

Transport security is STARTTLS unless ``delivery.smtp.security`` says
``tls`` (implicit TLS) or, explicitly, ``none``. The server's answer is the
acknowledgement: recipients it refuses are failed items with the SMTP reply,
a refused sender, message or login fails the whole send, and a server that
cannot be reached is :class:`~radnode.peers.dicom.PeerUnavailable` like any
other peer.
"""

from __future__ import annotations

import html
import smtplib
import socket
import ssl
import time
from collections.abc import Collection
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import structlog
import yaml

from radnode.model.branding import ReportBranding
from radnode.model.delivery import ResultPackage
from radnode.model.jobs import Destination
from radnode.peers.dicom import EchoResult, FailureKind, PeerUnavailable, SendReport
from radnode.settings import DeliverySettings, SmtpSettings

log = structlog.get_logger(__name__)

#: The ``email`` entry that stands for the study's Referring Physician.
REFERRING = "referring"


class DirectoryError(LookupError):
    """The Referring Physician cannot be turned into an address."""


def _normalize_name(name: str) -> str:
    """``Smith^John^^Dr`` and ``SMITH^JOHN`` compare equal (case, empty parts)."""
    return "^".join(p.strip().upper() for p in str(name).split("^") if p.strip())


def referring_address(physician: str, directory_file: Path | None) -> str:
    """The address of *physician* from the directory file; DirectoryError otherwise."""
    if not physician:
        raise DirectoryError("the study names no Referring Physician")
    if directory_file is None:
        raise DirectoryError("delivery.directory_file is not set; {email: referring} needs it")
    try:
        data = yaml.safe_load(Path(directory_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DirectoryError(f"cannot read the directory file {directory_file}: {exc}") from exc
    if not isinstance(data, dict):
        raise DirectoryError(f"{directory_file}: expected a mapping of 'Family^Given' names to addresses")
    wanted = _normalize_name(physician)
    for name, address in data.items():
        if _normalize_name(str(name)) == wanted and isinstance(address, str) and "@" in address:
            return address.strip()
    # The name itself is PHI-adjacent; the log and error keep it out.
    raise DirectoryError(f"the Referring Physician is not in the directory file {directory_file}")


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    return context


def open_smtp(settings: SmtpSettings) -> smtplib.SMTP:
    """Connect, EHLO, secure (STARTTLS / implicit TLS) and log in as configured.

    Raises PeerUnavailable with what to check when any step fails.
    """
    where = f"SMTP server {settings.host}:{settings.port}"
    try:
        client: smtplib.SMTP
        if settings.security == "tls":
            client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=_tls_context(settings))
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        client.ehlo()
        if settings.security == "starttls":
            if not client.has_extn("starttls"):
                client.close()
                raise PeerUnavailable(
                    f"{where} does not offer STARTTLS — enable it there, or set delivery.smtp.security to tls or (explicitly) none",
                    FailureKind.REFUSED,
                    where,
                )
            client.starttls(context=_tls_context(settings))
            client.ehlo()
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            client.login(settings.username, password)
    except PeerUnavailable:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise PeerUnavailable(f"{where} refused the login for {settings.username!r}: {exc.smtp_code} {_text(exc.smtp_error)} — check delivery.smtp.username/password", FailureKind.REJECTED, where) from exc
    except ssl.SSLError as exc:
        raise PeerUnavailable(f"TLS with {where} failed: {exc} — check its certificate or delivery.smtp.ca_file", FailureKind.REJECTED, where) from exc
    except (socket.timeout, TimeoutError) as exc:
        raise PeerUnavailable(f"{where} did not answer within {settings.timeout:g} s", FailureKind.CONNECT_TIMEOUT, where) from exc
    except ConnectionRefusedError as exc:
        raise PeerUnavailable(f"{where}: connection refused — is the mail server running, and are delivery.smtp.host and port right?", FailureKind.REFUSED, where) from exc
    except socket.gaierror as exc:
        raise PeerUnavailable(f"{where}: host name does not resolve ({exc})", FailureKind.UNRESOLVED, where) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise PeerUnavailable(f"{where}: {exc}", FailureKind.ABORTED, where) from exc
    return client


def verp_address(bounce_address: str, job_id: str) -> str:
    """The per-job envelope sender: ``bounces@example.org`` → ``bounces+<job_id>@example.org``.

    Variable envelope return path (VERP): a delivery status notification
    (RFC 3464) goes back to the envelope sender, so the address it is sent
    to names the job. The reverse is :func:`radnode.peers.dsn.job_from_verp`.
    """
    local, _, domain = bounce_address.rpartition("@")
    if not local or not domain or "+" in local:
        raise ValueError(f"bounce_address {bounce_address!r}: expected local@domain without '+'")
    if not job_id or not job_id.isalnum():
        raise ValueError(f"job_id {job_id!r}: expected letters and digits only")
    return f"{local}+{job_id}@{domain}"


def envelope_sender(settings: SmtpSettings, job_id: str) -> str:
    """MAIL FROM for *job_id*'s mail: its VERP address when ``bounce_address`` is set, else ``sender``."""
    return verp_address(settings.bounce_address, job_id) if settings.bounce_address else settings.sender


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def build_message(package: ResultPackage, recipients: list[str], sender: str, *, phi: bool, branding: ReportBranding) -> EmailMessage:
    """The e-mail for *package*: text + HTML alternative, PDF attached when *phi*."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    subject = f"[{branding.institution_name}] {package.summary()}"
    if phi and package.accession:
        subject += f" — accession {package.accession}"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(idstring=package.job_id[:16], domain=sender.split("@", 1)[1])
    msg["X-Radnode-Job"] = package.job_id
    if package.critical:
        msg["Importance"] = "high"
        msg["X-Priority"] = "1"

    lines = [f"{branding.institution_name} — {package.application} results", ""]
    if package.critical:
        lines += ["CRITICAL FINDING: " + ", ".join(f.name for f in package.critical_findings), ""]
    if phi:
        p = package.patient
        lines += [
            f"Patient: {p.name.replace('^', ' ').strip()} (ID {p.patient_id})",
            f"Accession: {package.accession}",
            f"Study: {package.study_description} {package.study_date}".rstrip(),
            "",
            "Measurements:",
        ]
        lines += [f"  {m.name}: {_fmt(m.value)} {m.unit}" for m in package.measurements] or ["  none"]
        if package.findings:
            lines += ["", "Findings:"]
            lines += [f"  {f.name}: {'present' if f.present else 'absent'}{' (CRITICAL)' if f.critical and f.present else ''}" for f in package.findings]
        if package.pdf:
            lines += ["", "The full report is attached (PDF)."]
    else:
        lines += ["This message contains no patient data. Open the results after logging in:"]
    if package.job_url:
        lines += ["", package.job_url]
    if package.demo:
        lines += ["", "DEMO MODEL - NOT FOR CLINICAL USE"]
    lines += ["", branding.disclaimer]
    msg.set_content("\n".join(lines))

    e = html.escape
    color = branding.primary_color
    parts = [
        '<html><body style="font-family:sans-serif">',
        f'<div style="background:{color};color:#fff;padding:8px 12px"><b>{e(branding.institution_name)}</b> — {e(package.application)} results</div>',
    ]
    if package.critical:
        parts.append(f'<p style="color:#b00020;font-weight:bold">CRITICAL FINDING: {e(", ".join(f.name for f in package.critical_findings))}</p>')
    if phi:
        p = package.patient
        parts.append(
            "<p>"
            f"Patient: {e(p.name.replace('^', ' ').strip())} (ID {e(p.patient_id)})<br>"
            f"Accession: {e(package.accession)}<br>Study: {e(package.study_description)} {e(package.study_date)}</p>"
        )
        rows = "".join(f"<tr><td>{e(m.name)}</td><td style='text-align:right'>{_fmt(m.value)}</td><td>{e(m.unit)}</td></tr>" for m in package.measurements)
        parts.append(f'<table border="1" cellpadding="4" style="border-collapse:collapse"><tr><th>Measurement</th><th>Value</th><th>Unit</th></tr>{rows}</table>')
        if package.findings:
            rows = "".join(
                f"<tr><td>{e(f.name)}</td><td>{'present' if f.present else 'absent'}</td><td>{'CRITICAL' if f.critical and f.present else ''}</td></tr>"
                for f in package.findings
            )
            parts.append(f'<table border="1" cellpadding="4" style="border-collapse:collapse"><tr><th>Finding</th><th></th><th></th></tr>{rows}</table>')
    else:
        parts.append("<p>This message contains no patient data. Open the results after logging in.</p>")
    if package.job_url:
        parts.append(f'<p><a href="{e(package.job_url)}">{e(package.job_url)}</a></p>')
    if package.demo:
        parts.append("<p><b>DEMO MODEL - NOT FOR CLINICAL USE</b></p>")
    parts.append(f'<p style="color:#666;font-size:small">{e(branding.disclaimer)}</p></body></html>')
    msg.add_alternative("".join(parts), subtype="html")
    if phi and package.pdf:
        msg.add_attachment(package.pdf, maintype="application", subtype="pdf", filename=f"{package.application}-report.pdf")
    return msg


class MailDestination:
    """An ``email`` destination: one message per job to its recipients."""

    #: The SMTP server's acceptance is the acknowledgement; there is nothing to query later.
    confirms = False

    def __init__(self, dest: Destination, caller: Any) -> None:
        if dest.email is None:
            raise ValueError(f"destination {dest.name!r} is not an e-mail destination")
        self.name = dest.name
        self.label = dest.label
        self.entries = tuple(dest.email)
        self.delivery: DeliverySettings = caller.delivery or DeliverySettings()
        self.branding: ReportBranding = caller.branding or ReportBranding()
        #: What the server answered to the last send (shown on the job page).
        self.acknowledgement = ""

    def recipients(self, package: ResultPackage) -> list[str]:
        out: list[str] = []
        for entry in self.entries:
            address = referring_address(package.referring_physician, self.delivery.directory_file) if entry == REFERRING else entry
            if address not in out:
                out.append(address)
        return out

    def send(self, files: list[Path], package: ResultPackage | None = None, *, done: Collection[str] = ()) -> SendReport:
        """Mail *package* to every recipient not in *done*; refused recipients are failed items."""
        if package is None:
            raise ValueError("an e-mail destination needs the result package")
        try:
            recipients = [r for r in self.recipients(package) if r not in done]
        except DirectoryError as exc:
            raise PeerUnavailable(f"e-mail destination {self.name!r}: {exc}", FailureKind.STATUS, self.label) from exc
        report = SendReport()
        if not recipients:
            return report
        smtp = self.delivery.smtp
        message = build_message(package, recipients, smtp.sender, phi=self.delivery.email_phi, branding=self.branding)
        envelope_from = envelope_sender(smtp, package.job_id)
        client = open_smtp(smtp)
        where = f"SMTP server {smtp.host}:{smtp.port}"
        try:
            refused = client.send_message(message, from_addr=envelope_from, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
        except smtplib.SMTPSenderRefused as exc:
            raise PeerUnavailable(f"{where} refused the sender {envelope_from!r}: {exc.smtp_code} {_text(exc.smtp_error)}", FailureKind.STATUS, where) from exc
        except smtplib.SMTPDataError as exc:
            raise PeerUnavailable(f"{where} refused the message: {exc.smtp_code} {_text(exc.smtp_error)}", FailureKind.STATUS, where) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise PeerUnavailable(f"{where} stopped answering while sending: {exc}", FailureKind.STOPPED_ANSWERING, where) from exc
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
        for address in recipients:
            if address in refused:
                code, text = refused[address]
                report.failed[address] = f"refused by {where}: {code} {_text(text)}"
            else:
                report.sent.append(address)
        self.acknowledgement = f"accepted by {where} for {len(report.sent)} recipient(s)" + (f", refused {len(report.failed)}" if report.failed else "")
        log.info("e-mail sent", destination=self.name, accepted=len(report.sent), refused=len(report.failed), phi=self.delivery.email_phi)
        return report

    def confirm(self, study_instance_uid: str, series_instance_uids: Any) -> dict[str, int]:
        return {}

    def check(self) -> EchoResult:
        return check_smtp(self.delivery.smtp)


def check_smtp(settings: SmtpSettings) -> EchoResult:
    """Connect, EHLO, STARTTLS / TLS and AUTH as a send would, then QUIT."""
    start = time.monotonic()
    try:
        client = open_smtp(settings)
    except PeerUnavailable as exc:
        return EchoResult(False, None, str(exc), round((time.monotonic() - start) * 1000, 1), exc.kind)
    steps = ["EHLO"] + (["STARTTLS"] if settings.security == "starttls" else ["TLS"] if settings.security == "tls" else []) + (["AUTH"] if settings.username else [])
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()
    return EchoResult(True, None, f"SMTP {settings.host}:{settings.port} answered ({', '.join(steps)} ok)", round((time.monotonic() - start) * 1000, 1))
