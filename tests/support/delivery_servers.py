"""Real servers for the delivery tests, on free loopback ports.

* :class:`SmtpServer` — aiosmtpd with STARTTLS required and AUTH, using a
  self-signed certificate made here with ``cryptography``; it keeps every
  message with its envelope sender and can refuse chosen recipients (550) like a real MTA.
* :class:`MllpServer` — the ``hl7`` package's asyncio MLLP server; answers
  each message with an ACK ``AA`` or ``AE`` (with a reason), or with nothing.
* :class:`FhirServer` — a small HTTP FHIR endpoint: ``GET /metadata`` gives a
  CapabilityStatement, ``POST /`` takes a transaction Bundle, validates the
  Bundle and every resource in it with ``fhir.resources`` (R4B) and answers a
  transaction-response, or an OperationOutcome (400) naming what is invalid;
  it can also be told to refuse everything (422) to test failures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hl7
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hl7.mllp import start_hl7_server

from tests.support.ports import free_port


def self_signed_cert(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for *host* and 127.0.0.1 and its key, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


# -- SMTP -------------------------------------------------------------------------


@dataclass
class _MailHandler:
    refuse: set[str] = field(default_factory=set)
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    #: The envelope sender (MAIL FROM) of each message, in the order of ``messages``.
    mail_from: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail_from.append(envelope.mail_from)
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default)))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on a free port: STARTTLS required, AUTH (user/secret) required."""

    USER = "radnode"
    PASSWORD = "s3cret"

    def __init__(self, tmp: Path) -> None:
        self.cert, key = self_signed_cert(tmp / "smtp-tls")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.handler = _MailHandler()
        self.port = free_port()

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login == self.USER.encode() and data.password == self.PASSWORD.encode()
            return AuthResult(success=ok, handled=False)

        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname="localhost",
            tls_context=context, require_starttls=True, auth_required=True, authenticator=authenticate,
        )

    def start(self) -> "SmtpServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[tuple[list[str], Message]]:
        return self.handler.messages

    def settings(self, **extra: Any) -> dict[str, Any]:
        """``delivery.smtp`` for radnode to use this server."""
        return {"host": "localhost", "port": self.port, "security": "starttls", "username": self.USER, "password": self.PASSWORD,
                "sender": "radnode@example.org", "ca_file": str(self.cert), "timeout": 10, **extra}


# -- MLLP -------------------------------------------------------------------------


class MllpServer:
    """An HL7 v2 receiver: ``mode`` is ``AA``, ``AE`` (with ``reason``) or ``silent``."""

    def __init__(self, mode: str = "AA", reason: str = "patient unknown") -> None:
        self.mode = mode
        self.reason = reason
        self.port = free_port()
        self.messages: list[hl7.Message] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"mllp-{self.port}")
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"mllp://127.0.0.1:{self.port}"

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.messages.append(message)
                if self.mode == "silent":
                    continue
                ack = str(message.create_ack(ack_code=self.mode, application="EMR", facility="HOSPITAL"))
                if self.mode != "AA":
                    ack = ack.rstrip("\r") + "|" + self.reason  # MSA-3, the text message: why
                writer.writeblock(ack.encode("utf-8"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            # A PDF in an ED OBX easily passes the 64 KiB default limit of the stream reader.
            self._server = await start_hl7_server(self._client, host="127.0.0.1", port=self.port, encoding="utf-8", limit=64 * 2**20)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def start(self) -> "MllpServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MLLP server did not start")
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# -- FHIR -------------------------------------------------------------------------


def validate_bundle(bundle: Any) -> list[str]:
    """Problems with a transaction Bundle, each resource checked by fhir.resources R4B."""
    from fhir.resources.R4B import get_fhir_model_class

    problems = []
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        return ["not a transaction Bundle"]
    try:
        get_fhir_model_class("Bundle").model_validate(bundle)
    except Exception as exc:
        problems.append(f"Bundle: {exc}")
    for i, entry in enumerate(bundle.get("entry", [])):
        resource = entry.get("resource", {})
        try:
            get_fhir_model_class(resource.get("resourceType", "?")).model_validate(resource)
        except Exception as exc:
            problems.append(f"entry {i} ({resource.get('resourceType')}): {exc}")
        if not (entry.get("request") or {}).get("method"):
            problems.append(f"entry {i}: no request.method")
    return problems


class FhirServer:
    """A FHIR endpoint that validates what it is sent; ``refuse`` makes it answer 422."""

    def __init__(self, refuse: bool = False, token: str | None = None) -> None:
        self.refuse = refuse
        self.token = token
        self.bundles: list[dict[str, Any]] = []
        self.rejected: list[list[str]] = []
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if outer.token is None or self.headers.get("Authorization") == f"Bearer {outer.token}":
                    return True
                self._answer(401, _outcome("security", "bearer token missing or wrong"))
                return False

            def do_GET(self) -> None:  # noqa: N802
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/metadata"):
                    self._answer(200, {"resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01",
                                       "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"]})
                else:
                    self._answer(404, _outcome("not-found", self.path))

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                if outer.refuse:
                    self._answer(422, _outcome("business-rule", "subject is not a known patient"))
                    return
                problems = validate_bundle(body)
                if problems:
                    outer.rejected.append(problems)
                    self._answer(400, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": p[:500]} for p in problems]})
                    return
                outer.bundles.append(body)
                entries = [{"response": {"status": "201 Created", "location": f"{e['resource']['resourceType']}/{len(outer.bundles)}-{i}/_history/1"}}
                           for i, e in enumerate(body["entry"])]
                self._answer(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name=f"fhir-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> "FhirServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


# -- webhook ----------------------------------------------------------------------


class WebhookServer:
    """An HTTP receiver that keeps every JSON POST and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                outer.posts.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name=f"webhook-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/radnode"

    def start(self) -> "WebhookServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
