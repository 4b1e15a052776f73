"""Who is asking, and may they: users, API tokens, sessions and CSRF.

* Passwords and API tokens are stored only as argon2 hashes (``UserRow``,
  ``ApiTokenRow``); a token row is found by the first 16 hex characters of the
  token's SHA-256, so a request costs one argon2 verification, not a scan.
* A browser holds one signed session cookie (itsdangerous, HttpOnly,
  SameSite=Lax, Secure per ``web.secure_cookies``, expiring after
  ``web.session_hours``). After login it carries a random session token
  whose SHA-256 names a ``web_sessions`` row (server-side session): logout,
  disabling or deleting the user and a password change delete the rows, so
  a copied cookie stops working at once. The user row is re-read on every
  request, so a role change takes effect at once too.
* Failed logins are counted per user and per client address
  (``login_throttle``): after ``web.login_delay_after`` failures each next
  try waits a doubling delay (from 1 s to ``web.login_max_delay``), and after
  ``web.login_lock_after`` the user is locked for ``web.login_lock_seconds``
  or until an admin unlocks it. Every outcome is audited.
* CSRF: every state-changing request authenticated by the cookie must echo
  the session's CSRF token, as the hidden form field ``csrf_token`` or the
  ``X-CSRF-Token`` header (JSON). A request with ``Authorization: Bearer``
  is not sent automatically by browsers, so it needs no CSRF token.
* Roles are ordered viewer < radiologist < admin; a role may do everything
  the roles below it may.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radnode.local_secret import read_or_create
from radnode.settings import Settings
from radnode.store.accounts import ROLES, ApiTokenRow, LoginThrottleRow, UserRow, WebSessionRow
from radnode.store.jobs import record_event

log = structlog.get_logger(__name__)

SESSION_COOKIE = "radnode_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_PREFIX = "rn_"
_RANK = {role: i for i, role in enumerate(ROLES)}
_hasher = PasswordHasher()
#: Verifying against this keeps the time of an unknown-user login like a known one.
_DUMMY_HASH = _hasher.hash("radnode-no-such-user")


class AccountError(ValueError):
    """A user or token cannot be created as asked (duplicate name, bad role)."""


class LoginRequired(Exception):
    """No valid session or token: 401 for the API, a redirect to /login for pages."""


class Forbidden(Exception):
    """Authenticated, but the role (or the CSRF token) does not allow this."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    name: str
    role: str
    via: Literal["session", "token"]
    csrf: str | None = None

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


# --------------------------------------------------------------------------
# Users and tokens (used by the CLI and the login page)
# --------------------------------------------------------------------------


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")


def add_user(session: Session, username: str, password: str, role: str, *, actor: str = "cli") -> UserRow:
    _check_role(role)
    if not username or len(username) > 64 or not username.isprintable() or username.strip() != username:
        raise AccountError("a username is 1-64 printable characters without edge spaces")
    if len(password) < 8:
        raise AccountError("a password needs at least 8 characters")
    if session.scalars(select(UserRow).where(UserRow.username == username)).first() is not None:
        raise AccountError(f"user {username!r} exists")
    row = UserRow(username=username, password_hash=_hasher.hash(password), role=role, created_at=time.time(), disabled=False)
    session.add(row)
    record_event(session, actor, "user:add", detail=f"{username} ({role})")
    return row


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.username)).all())


def authenticate(session: Session, username: str, password: str) -> UserRow | None:
    """The enabled user with this password, else None (same cost either way)."""
    row = session.scalars(select(UserRow).where(UserRow.username == username)).first()
    try:
        _hasher.verify(row.password_hash if row is not None else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    return row


def _user(session: Session, username: str) -> UserRow:
    row = session.scalars(select(UserRow).where(UserRow.username == username)).first()
    if row is None:
        raise AccountError(f"no user {username!r}")
    return row


def end_sessions(session: Session, username: str) -> int:
    """Delete every server-side session of *username*; return how many."""
    rows = session.scalars(select(WebSessionRow).where(WebSessionRow.username == username)).all()
    for row in rows:
        session.delete(row)
    return len(rows)


def set_disabled(session: Session, username: str, disabled: bool, *, actor: str = "cli", source: str | None = None) -> None:
    row = _user(session, username)
    row.disabled = disabled
    ended = end_sessions(session, username) if disabled else 0
    record_event(session, actor, "user:disable" if disabled else "user:enable", detail=f"{username} (sessions ended: {ended})", source=source)


def delete_user(session: Session, username: str, *, actor: str = "cli", source: str | None = None) -> None:
    row = _user(session, username)
    ended = end_sessions(session, username)
    session.delete(row)
    record_event(session, actor, "user:delete", detail=f"{username} (sessions ended: {ended})", source=source)


def reset_password(session: Session, username: str, password: str, *, actor: str = "cli", source: str | None = None) -> None:
    """Set a new password; every session of the user ends, and a lock is lifted."""
    if len(password) < 8:
        raise AccountError("a password needs at least 8 characters")
    row = _user(session, username)
    row.password_hash = _hasher.hash(password)
    ended = end_sessions(session, username)
    unlock(session, username, actor=actor, source=source, audit=False)
    record_event(session, actor, "user:password", detail=f"{username} (sessions ended: {ended})", source=source)


def unlock(session: Session, username: str, *, actor: str = "cli", source: str | None = None, audit: bool = True) -> bool:
    """Lift a login lock and forget the user's failures; True if there was anything to lift."""
    row = session.get(LoginThrottleRow, f"user:{username}")
    if row is not None:
        session.delete(row)
    if audit:
        record_event(session, actor, "user:unlock", detail=username, source=source)
    return row is not None


def list_tokens(session: Session) -> list[ApiTokenRow]:
    return list(session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.name)).all())


def revoke_token(session: Session, name: str, *, actor: str = "cli", source: str | None = None) -> None:
    row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.name == name)).first()
    if row is None:
        raise AccountError(f"no token {name!r}")
    row.revoked = True
    record_event(session, actor, "token:revoke", detail=name, source=source)


# --------------------------------------------------------------------------
# Login throttling
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    delay_after: int = 5
    max_delay: float = 900.0
    lock_after: int = 20
    lock_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "ThrottlePolicy":
        w = settings.web
        return cls(w.login_delay_after, w.login_max_delay, w.login_lock_after, w.login_lock_seconds)

    def delay(self, failures: int) -> float:
        if failures < self.delay_after:
            return 0.0
        return float(min(2.0 ** min(failures - self.delay_after, 30), self.max_delay))


class LoginThrottled(Exception):
    """Too many failed logins: wait ``retry_after`` seconds (or ask an admin, if locked)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _throttle_keys(username: str, address: str) -> tuple[str, str]:
    return f"user:{username[:64]}", f"addr:{address[:64]}"


def check_throttle(session: Session, policy: ThrottlePolicy, username: str, address: str, now: float | None = None) -> None:
    """Raise LoginThrottled if this user or address must wait (before any password is checked)."""
    now = time.time() if now is None else now
    for key in _throttle_keys(username, address):
        row = session.get(LoginThrottleRow, key)
        if row is None:
            continue
        if row.locked_until is not None and now < row.locked_until:
            raise LoginThrottled("locked after too many failed logins", row.locked_until - now)
        wait = row.last_failure_at + policy.delay(row.failures) - now
        if wait > 0:
            raise LoginThrottled("too many failed logins; wait before trying again", wait)


def record_login_failure(session: Session, policy: ThrottlePolicy, username: str, address: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    for key in _throttle_keys(username, address):
        row = session.get(LoginThrottleRow, key)
        if row is None:
            row = LoginThrottleRow(key=key, failures=0, last_failure_at=now, locked_until=None)
            session.add(row)
        if row.locked_until is not None and now >= row.locked_until:
            row.failures, row.locked_until = 0, None  # the lock ran out: start counting again
        row.failures += 1
        row.last_failure_at = now
        if key.startswith("user:") and row.failures >= policy.lock_after and row.locked_until is None:
            row.locked_until = now + policy.lock_seconds
            record_event(session, "radnode", "user:locked", detail=f"{username[:64]} after {row.failures} failed logins", source=address)


def record_login_success(session: Session, username: str, address: str) -> None:
    for key in _throttle_keys(username, address):
        row = session.get(LoginThrottleRow, key)
        if row is not None:
            session.delete(row)


def _lookup(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def add_token(session: Session, name: str, role: str, *, actor: str = "cli") -> str:
    """Create an API token and return it; only its hash is kept, so it is shown once."""
    _check_role(role)
    if not name or len(name) > 64:
        raise AccountError("a token name is 1-64 characters")
    if session.scalars(select(ApiTokenRow).where(ApiTokenRow.name == name)).first() is not None:
        raise AccountError(f"token {name!r} exists")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiTokenRow(name=name, lookup=_lookup(token), token_hash=_hasher.hash(token), role=role, created_at=time.time(), revoked=False))
    record_event(session, actor, "token:add", detail=f"{name} ({role})")
    return token


def verify_token(session: Session, token: str) -> ApiTokenRow | None:
    for row in session.scalars(select(ApiTokenRow).where(ApiTokenRow.lookup == _lookup(token), ApiTokenRow.revoked.is_(False))).all():
        try:
            _hasher.verify(row.token_hash, token)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            continue
        row.last_used_at = time.time()
        return row
    return None


# --------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------


def session_secret(settings: Settings) -> str:
    """``web.session_secret``, else the node's persisted random secret (created 0600 once)."""
    if settings.web.session_secret is not None:
        return settings.web.session_secret.get_secret_value()
    return read_or_create(Path(settings.data_dir) / "web_secret", lambda: secrets.token_urlsafe(48))


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(session: Session, username: str, hours: float, source: str = "") -> tuple[str, str]:
    """A new server-side session; return (token for the cookie, its CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    session.add(WebSessionRow(id=_session_id(token), username=username, csrf=csrf, created_at=now, expires_at=now + hours * 3600, source=source[:64]))
    # Expired rows of anyone are swept on each login.
    for old in session.scalars(select(WebSessionRow).where(WebSessionRow.expires_at < now)).all():
        session.delete(old)
    return token, csrf


def end_session(session: Session, token: str) -> None:
    row = session.get(WebSessionRow, _session_id(token))
    if row is not None:
        session.delete(row)


def lookup_session(session: Session, token: str) -> WebSessionRow | None:
    row = session.get(WebSessionRow, _session_id(token))
    if row is None or row.expires_at < time.time():
        return None
    return row


class SessionCodec:
    """Signs and reads the session cookie."""

    def __init__(self, settings: Settings) -> None:
        self.serializer = URLSafeTimedSerializer(session_secret(settings), salt="radnode.session")
        self.max_age = int(settings.web.session_hours * 3600)
        self.secure = settings.web.secure_cookies

    def dumps(self, username: str | None = None) -> tuple[str, str]:
        """A fresh anonymous cookie value (for the login form) and its CSRF token."""
        if username is not None:
            raise ValueError("a logged-in cookie is made by dumps_session (server-side sessions)")
        csrf = secrets.token_urlsafe(32)
        return self.serializer.dumps({"u": None, "c": csrf}), csrf

    def dumps_session(self, token: str, csrf: str) -> str:
        """The cookie value of a server-side session."""
        return self.serializer.dumps({"s": token, "c": csrf})

    def loads(self, value: str | None) -> dict[str, Any] | None:
        if not value:
            return None
        try:
            data = self.serializer.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        return data if isinstance(data, dict) and isinstance(data.get("c"), str) else None

    def set_cookie(self, response: Any, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=self.max_age, httponly=True, samesite="lax", secure=self.secure, path="/")

    def clear(self, response: Any) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure)


def session_data(request: Request) -> dict[str, Any] | None:
    codec: SessionCodec = request.app.state.sessions_codec
    return codec.loads(request.cookies.get(SESSION_COOKIE))


def resolve_principal(request: Request) -> Principal | None:
    """The caller, from a bearer token or the session cookie (user re-read from the store)."""
    cached = getattr(request.state, "principal", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    sessions: sessionmaker[Session] = request.app.state.db
    principal: Principal | None = None
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise LoginRequired()
        with sessions.begin() as s:
            row = verify_token(s, token.strip())
            if row is None:
                raise LoginRequired()
            principal = Principal(name=f"token:{row.name}", role=row.role, via="token")
    else:
        data = session_data(request)
        session_token = data.get("s") if data else None
        if isinstance(session_token, str) and session_token:
            with sessions() as s:
                web = lookup_session(s, session_token)
                user = s.scalars(select(UserRow).where(UserRow.username == web.username)).first() if web is not None else None
                if web is not None and user is not None and not user.disabled:
                    principal = Principal(name=user.username, role=user.role, via="session", csrf=web.csrf)
    request.state.principal = principal
    return principal


async def check_csrf(request: Request, expected: str | None) -> None:
    """The request echoes the session's CSRF token (header, else form field)."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("csrf token missing or wrong", path=request.url.path)
        raise Forbidden("CSRF token missing or invalid; reload the page and try again")


def require(role: str) -> Callable[[Request], Any]:
    """A dependency: the caller has at least *role*; unsafe requests by cookie carry the CSRF token."""
    _check_role(role)

    async def dependency(request: Request) -> Principal:
        principal = resolve_principal(request)
        if principal is None:
            raise LoginRequired()
        if request.method not in SAFE_METHODS and principal.via == "session":
            await check_csrf(request, principal.csrf)
        if not principal.may(role):
            raise Forbidden(f"this needs the {role} role (you are {principal.role})")
        return principal

    return dependency
