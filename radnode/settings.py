"""One typed settings object for every radnode process.

Settings are read once per process, in this order of precedence: explicit
arguments, ``RADNODE_*`` environment variables (nested keys with ``__``, e.g.
``RADNODE_LISTENER__MAX_ASSOCIATIONS``), the YAML file (``--config``, else
``RADNODE_CONFIG``, else ``./radnode.yaml`` when it exists), then defaults.
An invalid value fails at start with the key and the reason; nothing is
silently clamped, and a change means a restart (only the routing YAML
hot-reloads).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from radnode.model.branding import ReportBranding
from radnode.model.validation import problems

DEFAULT_CONFIG_FILE = Path("radnode.yaml")

# A path setting is made absolute once, when settings load (relative to the working directory then), so that
# nothing later depends on the working directory — nipype, for one, runs each node in a folder of its own.
AbsolutePath = Annotated[Path, AfterValidator(lambda p: Path(os.path.abspath(os.path.expanduser(p))))]

_AE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


def _check_ae_title(value: str) -> str:
    """AE titles are 1–16 printable ASCII characters, no backslash (PS3.5 6.2)."""
    if not _AE_RE.match(value):
        raise ValueError("an AE title is 1-16 printable ASCII characters without backslash or edge spaces")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalledAE(_Section):
    """A called AE title radnode answers to.

    A radiologist's "send to AI node" picks the application by the AE title
    the study is sent to, so each title may be bound to an application and to
    its own quiet period.
    """

    ae_title: str
    application: str | None = None
    quiet_seconds: float | None = Field(default=None, gt=0)
    complete_on_release: bool | None = Field(default=None, description="Override of the node-wide complete_on_release for this AE title.")

    _ae = field_validator("ae_title")(_check_ae_title)


class DicomPeer(_Section):
    """A DICOM node radnode knows: a PACS to pull from and to return results to.

    Results of a study sent by a known peer's AE title go back to that peer
    when routing says ``return_to_sender``.

    ``retrieve`` is how ``radnode pull`` fetches a study from this peer:
    ``move`` (C-MOVE to radnode's own AE title; the PACS must know radnode as
    a modality, host and port) or ``get`` (C-GET: the instances come back on
    radnode's own association, for PACSes that cannot connect back).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    retrieve: Literal["move", "get"] = Field(default="move", description="How pulls retrieve studies: C-MOVE or C-GET.")
    tls: PeerTls | None = Field(default=None, description="Associate with this peer over DICOM TLS.")

    _ae = field_validator("ae_title")(_check_ae_title)


class TlsFiles(_Section):
    """Certificate files for DICOM TLS (PS3.15 B.1) on the listener or towards a peer.

    ``ca_file`` is the bundle peers' certificates are checked against; with
    ``require_client_cert`` the listener refuses a peer without a certificate
    signed by it (mutual TLS, the BCP 195 profile hospitals ask for).
    """

    cert_file: AbsolutePath
    key_file: AbsolutePath
    ca_file: AbsolutePath | None = None
    require_client_cert: bool = False


class PeerTls(_Section):
    """TLS towards one peer: ``ca_file`` checks the peer; cert/key present radnode (optional)."""

    ca_file: AbsolutePath | None = None
    cert_file: AbsolutePath | None = None
    key_file: AbsolutePath | None = None
    verify_hostname: bool = False


#: Most listener processes ``listener.processes: auto`` starts (each extra one: ~250 MB resident, a 128 MiB journal slot).
AUTO_PROCESSES_MAX = 8


class ListenerSettings(_Section):
    """The DICOM SCP (C-ECHO, C-STORE)."""

    host: str = "0.0.0.0"
    extra_called_aes: list[CalledAE] = Field(
        default_factory=list,
        description="Called AE titles accepted besides the main one, each optionally bound to an application.",
    )
    allowed_calling_aes: list[str] | None = Field(
        default=None, description="If set, only these calling AE titles may associate."
    )
    allowed_hosts: list[str] | None = Field(
        default=None, description="If set, only these source IP addresses may associate."
    )
    max_associations: int = Field(
        default=16, ge=1, le=1000, description="Associations the node holds at once (split evenly over the listener processes)."
    )
    # --- security (issue 14): bounded reads, per-host slots, sizes, TLS ---
    max_associations_per_host: int = Field(
        default=4, ge=1, le=1000, description="Connections one source address may hold at once (checked on accept)."
    )
    max_pdu_size: int = Field(
        default=262144, ge=4096, le=16 * 1024 * 1024,
        description="Largest PDU radnode receives (announced to peers and enforced; a longer one drops the connection).",
    )
    max_instance_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, le=64 * 1024**3,
        description="Largest data set accepted, inflated size of deflated data included (else 0xA700).",
    )
    max_nesting_depth: int = Field(default=32, ge=1, le=512, description="Deepest sequence nesting accepted (else 0xC213).")
    tls: TlsFiles | None = Field(default=None, description="DICOM TLS on the listener port (cert_file, key_file, ca_file, require_client_cert).")
    processes: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Listener processes accepting on the port, each association served whole by the least busy one "
            "(Python serves one process's associations with one interpreter lock). 'auto': one per CPU core "
            "this process may use, at most 8."
        ),
    )
    fsync: bool = Field(
        default=True, description="Make every instance durable before acknowledging it (safe default)."
    )
    journal: bool = Field(
        default=True,
        description=(
            "With fsync: the durable fast path. An instance is acknowledged once it is synced into a write-ahead "
            "journal in spool/.journal/ (one write + fdatasync into a pre-written file); the spool files are "
            "flushed in the background and rewritten from the journal after a crash. false: fsync each file "
            "and its folder before acknowledging."
        ),
    )
    journal_segment_mib: int = Field(
        default=64, ge=1, le=4096,
        description="Size of each of the journal's two segments per listener process (MiB, written once with zeros); "
        "larger instances than a quarter of it are fsync'ed on their own.",
    )
    network_timeout: float = Field(default=60.0, gt=0)

    def process_count(self) -> int:
        """``processes`` as a number ('auto': the CPU cores this process may run on, 1 to 8)."""
        if self.processes != "auto":
            return self.processes
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(cores, AUTO_PROCESSES_MAX))

    assembly_interval: float = Field(default=1.0, gt=0, description="How often study completeness is checked.")


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DatabaseSettings(_Section):
    url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default is a SQLite file in the data folder."
    )


class QueueSettings(_Section):
    """The job queue: RabbitMQ when a broker URL is set, else embedded."""

    broker_url: SecretStr | None = Field(default=None, description="amqp://user:pass@host:5672/vhost; unset = embedded queue.")
    namespace: str = Field(default="radnode", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Prefix of every exchange and queue name.")
    max_attempts: int = Field(default=3, ge=1, le=100)
    retry_delays: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0], min_length=1)
    prefetch: int = Field(default=1, ge=1, le=100)
    outbox_interval: float = Field(default=2.0, gt=0, description="How often unpublished jobs are (re)published.")
    urgency: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")], Literal["urgent", "elective"]] = Field(
        default_factory=dict,
        description="Per application, 'urgent' or 'elective', overriding what the application declares (hemorrhage is urgent). "
        "Urgent jobs are queued ahead of elective ones and run in the workers' urgent lane. Unknown applications stop the node at start.",
    )


class RoutingSettings(_Section):
    """Routing rules (hot-reloaded) and the series classifier."""

    rules_file: AbsolutePath | None = Field(default=None, description="Routing YAML; default: the packaged example.")
    reload_interval: float = Field(default=2.0, gt=0)
    classifier_model: AbsolutePath | None = Field(
        default=None,
        description="xgboost model; default: the shipped one. A site model from 'radnode classifier train --with-corrections' "
        "is refused unless it answers its held-out corrections at least as well as the shipped model (and >= 90 %).",
    )
    confidence_threshold: float = Field(default=0.5, ge=0, le=1)


class AnalyzerSettings(_Section):
    """Analyzers, model folders and the ONNX Runtime."""

    plugins: list[str] = Field(
        default_factory=list, description="Extra analyzers as 'module:Class' import paths."
    )
    model_dirs: list[AbsolutePath] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    threads: int = Field(default=0, ge=0, description="0 lets ONNX Runtime choose.")
    keep_workdirs_days: float = Field(default=7.0, ge=0)


class WorkerSettings(_Section):
    applications: list[str] | None = Field(default=None, description="Applications this worker serves; default all.")
    concurrency: int = Field(default=1, ge=1, le=64, description="Consumer threads for elective applications (for all, without an urgent lane).")
    urgent_concurrency: int = Field(
        default=1, ge=0, le=64,
        description="Consumer threads that take only urgent applications, beside the elective ones, so a long elective job never "
        "delays an urgent one (the machine then runs two jobs at once). 0: no urgent lane; urgent jobs share the elective "
        "consumers and only go first among the jobs waiting.",
    )
    shutdown_deadline: float = Field(default=60.0, gt=0, description="Seconds SIGTERM waits for a running job.")


class ResultSettings(_Section):
    """How results are written and returned to PACS."""

    send: bool = Field(default=True, description="C-STORE results to the job's destinations.")
    confirm: bool = Field(default=True, description="C-FIND the new series on the destination after sending.")
    send_attempts: int = Field(default=3, ge=1, le=20, description="Tries per destination within one job attempt.")
    send_retry_delays: list[float] = Field(default_factory=lambda: [2.0, 10.0], min_length=1)
    segmentation_type: Literal["BINARY", "LABELMAP"] = "BINARY"
    device_serial_number: str = Field(default="radnode-0001", max_length=64)
    secondary_capture_pages: bool = Field(default=True, description="Also send report pages as secondary capture images.")


class WebTls(_Section):
    """HTTPS for the web app without a proxy (passed to uvicorn)."""

    cert_file: AbsolutePath
    key_file: AbsolutePath


class WebSettings(_Section):
    """The web front end (``radnode web``): login sessions and the retraining archive.

    ``port`` is also set by ``$RADNODE_WEB_PORT`` or ``radnode web --port``
    (those win, for compatibility with deployments that set it before this
    section existed). ``session_secret`` signs session cookies; unset, a
    random secret is created once in ``data_dir/web_secret`` (mode 0600) so
    sessions survive a restart and every web process of a node agrees.
    """

    port: int = Field(default=8080, ge=1, le=65535)
    host: str = Field(default="0.0.0.0", description="Address the web app binds to.")
    in_serve: bool = Field(default=True, description="Run the web app inside `radnode serve`.")
    session_secret: SecretStr | None = Field(default=None, description="Signs session cookies; default: data_dir/web_secret, created once.")
    secure_cookies: bool = Field(default=True, description="Send cookies only over HTTPS (turn off only for plain-HTTP test setups).")
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="A login lasts this long.")
    retraining_dir: AbsolutePath | None = Field(default=None, description="Where flagged cases are copied; default data_dir/retraining.")
    # --- security (issue 14) ---
    login_delay_after: int = Field(default=5, ge=1, le=1000, description="Failed logins (per user and per address) before each next try must wait.")
    login_max_delay: float = Field(default=900.0, gt=0, description="Longest wait between tries; the wait doubles from 1 s.")
    login_lock_after: int = Field(default=20, ge=1, le=10000, description="Failed logins after which the user is locked.")
    login_lock_seconds: float = Field(default=3600.0, gt=0, description="How long a lock lasts unless an admin unlocks first.")
    docs_require_login: bool = Field(default=True, description="/docs and /openapi.json need a login.")
    tls: WebTls | None = Field(default=None, description="Serve HTTPS directly (cert_file, key_file).")


class SmtpSettings(_Section):
    """The mail server results are e-mailed through (``email`` destinations).

    ``security`` is ``starttls`` unless written otherwise: ``tls`` is implicit
    TLS (port 465), ``none`` sends in clear and must be chosen explicitly.
    ``ca_file`` trusts a private CA (or a test's self-signed certificate).

    ``bounce_address`` makes the envelope sender (MAIL FROM, RFC 5321 4.1.1.2)
    of each result mail a per-job address, VERP-style: ``bounces@example.org``
    becomes ``bounces+<job id>@example.org``, so a delivery status
    notification (RFC 3464) that comes back later names its job. The header
    ``From`` stays ``sender``. ``bounce_mailbox`` (a Maildir folder or an mbox
    file that mail to the bounce address lands in) is read every
    ``bounce_poll_seconds`` by ``radnode serve`` and ``radnode worker``, as
    ``radnode mail bounces`` reads it on demand.
    """

    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(default="radnode@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    ca_file: Path | None = None
    timeout: float = Field(default=30.0, gt=0)
    bounce_address: str | None = Field(
        default=None,
        pattern=r"^[^@\s+]+@[^@\s]+$",
        description="Envelope sender base for per-job VERP bounce addresses (bounces@example.org → bounces+<job id>@example.org); no '+' in it.",
    )
    bounce_mailbox: AbsolutePath | None = Field(default=None, description="Maildir folder or mbox file where bounces arrive; polled by serve and worker.")
    bounce_poll_seconds: float = Field(default=300.0, gt=0, description="How often serve and worker read bounce_mailbox.")


class Hl7Settings(_Section):
    """Who radnode is in HL7 v2 messages (MSH-3..6), and the MLLP transport."""

    sending_application: str = "RADNODE"
    sending_facility: str = "RADNODE"
    receiving_application: str = "EMR"
    receiving_facility: str = "HOSPITAL"
    ack_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for the ACK; no ACK is a retryable failure.")
    ca_file: Path | None = Field(default=None, description="Trusted CA for mllps:// (TLS) receivers.")


class FhirSettings(_Section):
    """How radnode authenticates to FHIR servers (``fhir`` destinations)."""

    auth: Literal["none", "bearer", "basic"] = "none"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    timeout: float = Field(default=30.0, gt=0)


class DeidSettings(_Section):
    """De-identification of what goes to ``external: true`` destinations (PS3.15 E.1 basic profile).

    ``retain_uids`` / ``retain_dates`` are the profile's Retain UIDs (E.3.9)
    and Retain Longitudinal Temporal Information (E.3.6) options. The
    pseudonym map stays in the node's database; the key in
    ``data_dir/deid_secret``.
    """

    retain_uids: bool = False
    retain_dates: bool = False


class DeliverySettings(_Section):
    """Results beyond PACS: e-mail, HL7 v2 (ORU^R01 over MLLP), FHIR R4; and
    the TLS and de-identification of DICOM destinations (``dicom_tls``, ``deid``).

    ``email_phi: false`` (the default) keeps patient data out of e-mail: the
    message carries no name, ID, accession or PDF, only a link to the job page
    behind login (``job_url_base``). ``directory_file`` maps Referring
    Physician names (as DICOM writes them, ``Family^Given``) to addresses for
    ``{email: referring}``.
    """

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    hl7: Hl7Settings = Field(default_factory=Hl7Settings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    email_phi: bool = False
    directory_file: Path | None = None
    job_url_base: str = Field(default="", description="Public base URL of the web app, for links to the job page.")
    dicom_tls: PeerTls | None = Field(
        default=None,
        description="DICOM TLS files for destinations marked `tls: true` (ca_file checks them; cert/key present radnode). "
        "A destination with the AE title, host and port of a configured peer uses that peer's `tls` instead.",
    )
    deid: DeidSettings = Field(default_factory=DeidSettings, description="De-identification for `external: true` destinations.")


class Settings(BaseSettings):
    """Everything a radnode process needs to know, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix="RADNODE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: AbsolutePath = Field(default=Path("radnode-data"), validate_default=True, description="Spool, index and work folders.")
    ae_title: str = "RADNODE"
    port: int = Field(default=11112, ge=1, le=65535)
    quiet_seconds: float = Field(default=10.0, gt=0, description="Quiet period after which a study is complete.")
    complete_on_release: bool = Field(
        default=True,
        description="Declare a study complete as soon as the association that delivered it is released and the series "
        "its routed applications need are present and plausibly whole; the quiet period stays the fallback.",
    )
    peers: list[DicomPeer] = Field(default_factory=list, description="PACS and other DICOM nodes radnode talks to.")
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    analyzers: AnalyzerSettings = Field(default_factory=AnalyzerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    report: ReportBranding = Field(default_factory=ReportBranding)
    web: WebSettings = Field(default_factory=WebSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    _ae = field_validator("ae_title")(_check_ae_title)

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'radnode.sqlite3').resolve()}"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def broker_url(self) -> str | None:
        return None if self.queue.broker_url is None else self.queue.broker_url.get_secret_value()

    def called_aes(self) -> list[CalledAE]:
        """The main AE title plus the extra ones, main first."""
        return [CalledAE(ae_title=self.ae_title), *self.listener.extra_called_aes]

    # The two lookups below run per received instance: they read the extra titles directly (the main
    # title carries no overrides) rather than building CalledAE models through called_aes() each time.

    def complete_on_release_for(self, called_ae: str) -> bool:
        for called in self.listener.extra_called_aes:
            if called.ae_title == called_ae and called.complete_on_release is not None:
                return called.complete_on_release
        return self.complete_on_release

    def quiet_seconds_for(self, called_ae: str) -> float:
        for called in self.listener.extra_called_aes:
            if called.ae_title == called_ae and called.quiet_seconds is not None:
                return called.quiet_seconds
        return self.quiet_seconds

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives through init_settings (see load()), so the
        # environment must win over it: env first, then the file's values.
        return env_settings, init_settings


class SettingsError(Exception):
    """The configuration is invalid; the message names the key and reason."""


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """``--config``, else ``RADNODE_CONFIG``, else ``./radnode.yaml`` if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("RADNODE_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def load(config: str | os.PathLike[str] | None = None) -> Settings:
    """Load and validate settings once; raise SettingsError naming the key."""
    path = resolve_config_path(config)
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"{path}: configuration file not found") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping of settings")
        data = loaded
    _apply_web_port_variable(data)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise SettingsError("\n".join(f"{source}: {problem}" for problem in problems(exc, top="(top level)", pydantic_words=True))) from None


def _apply_web_port_variable(data: dict[str, Any]) -> None:
    """``$RADNODE_WEB_PORT`` (the README's variable, older than the ``web`` section) sets ``web.port``.

    Applied here, where every entry point loads its settings, so ``radnode web`` and ``radnode serve`` agree;
    ``$RADNODE_WEB__PORT`` (the nested form) still wins over it, as any environment variable wins over the file.
    """
    port = os.environ.get("RADNODE_WEB_PORT")
    if port and "RADNODE_WEB__PORT" not in os.environ:
        web = data.get("web")
        data["web"] = {**(web if isinstance(web, dict) else {}), "port": port}


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with secrets masked."""
    return settings.model_dump(mode="json")  # SecretStr dumps as '**********'
