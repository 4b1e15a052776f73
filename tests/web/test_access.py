"""Access that can be taken back (issue 14): throttling and locks, sessions that
end at logout / disable / password change, token revocation, the admin page,
API docs behind login, and a NUL in a path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from radnode.cli import main as cli_main
from radnode.store.jobs import AuditRow
from radnode.store.db import open_store
from radnode.settings import Settings
from radnode.web.app import create_app
from radnode.web.auth import add_token, add_user, unlock
from tests.web.test_api import CSRF_RE, PASSWORD, login

WRONG = "not the password"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        web={"secure_cookies": False, "session_secret": "test-secret-0123456789", "login_max_delay": 1.0, "login_lock_seconds": 3600},
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        for name, role in (("vera", "viewer"), ("adam", "admin")):
            add_user(s, name, PASSWORD, role, actor="test")
    with TestClient(create_app(settings)) as c:
        yield c


def _try(client: TestClient, user: str, password: str) -> int:
    client.cookies.clear()
    token = CSRF_RE.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": user, "password": password, "csrf_token": token, "next": "/jobs"}, follow_redirects=False)
    return r.status_code


def _audit(settings: Settings) -> list[tuple[str, str, str | None]]:
    with open_store(settings)[1]() as s:
        return [(r.actor, r.action, r.source) for r in s.scalars(select(AuditRow).order_by(AuditRow.id))]


def test_twenty_wrong_passwords_lock_the_user_until_an_admin_unlocks(client: TestClient, settings: Settings) -> None:
    codes = [_try(client, "vera", WRONG) for _ in range(20)]
    # The first five are plain failures; then each try must wait (429) or fails.
    assert codes[:5] == [401] * 5
    assert 429 in codes[5:]
    time.sleep(1.1)  # the address delay (web.login_max_delay = 1 s) has passed; the user lock has not
    assert _try(client, "vera", PASSWORD) == 429
    with open_store(settings)[1].begin() as s:
        assert unlock(s, "vera", actor="adam")
    time.sleep(1.1)
    assert _try(client, "vera", PASSWORD) == 303
    actions = [a for _, a, _ in _audit(settings)]
    assert "user:locked" in actions and "user:unlock" in actions and actions.count("login:failed") >= 5
    assert all(src == "testclient" for _, a, src in _audit(settings) if a.startswith("login"))


def test_lock_ends_when_its_time_passes(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        web={"secure_cookies": False, "session_secret": "test-secret-0123456789", "login_max_delay": 0.5, "login_lock_after": 3, "login_delay_after": 10, "login_lock_seconds": 1.0},
    )
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "vera", PASSWORD, "viewer")
    with TestClient(create_app(settings)) as client:
        assert [_try(client, "vera", WRONG) for _ in range(3)] == [401, 401, 401]
        assert _try(client, "vera", PASSWORD) == 429
        time.sleep(1.2)
        assert _try(client, "vera", PASSWORD) == 303


def test_a_cookie_from_before_logout_gets_401(client: TestClient) -> None:
    csrf = login(client, "vera")
    old = dict(client.cookies)
    assert client.get("/api/jobs").status_code == 200
    r = client.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    client.cookies.clear()
    for k, v in old.items():
        client.cookies.set(k, v)
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/jobs", follow_redirects=False).status_code == 303  # to /login


def test_disable_and_password_reset_end_sessions_at_once(client: TestClient, settings: Settings) -> None:
    login(client, "vera")
    assert client.get("/api/jobs").status_code == 200
    runner = CliRunner()
    env = {"RADNODE_DATA_DIR": str(settings.data_dir)}
    res = runner.invoke(cli_main, ["users", "disable", "vera"], env=env)
    assert res.exit_code == 0, res.output
    assert client.get("/api/jobs").status_code == 401
    assert _try(client, "vera", PASSWORD) == 401
    assert runner.invoke(cli_main, ["users", "enable", "vera"], env=env).exit_code == 0
    login(client, "vera")
    res = runner.invoke(cli_main, ["users", "reset-password", "vera", "--password-stdin"], env=env, input="a brand new password\n")
    assert res.exit_code == 0, res.output
    assert client.get("/api/jobs").status_code == 401
    assert _try(client, "vera", PASSWORD) == 401
    assert _try(client, "vera", "a brand new password") == 303
    assert runner.invoke(cli_main, ["users", "delete", "vera", "--yes"], env=env).exit_code == 0
    assert client.get("/api/jobs").status_code == 401
    actions = [a for _, a, _ in _audit(settings)]
    for a in ("user:disable", "user:enable", "user:password", "user:delete"):
        assert a in actions


def test_tokens_list_and_revoke(client: TestClient, settings: Settings) -> None:
    with open_store(settings)[1].begin() as s:
        token = add_token(s, "pacs-script", "viewer")
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/jobs", headers=bearer).status_code == 200
    runner = CliRunner()
    env = {"RADNODE_DATA_DIR": str(settings.data_dir)}
    listed = runner.invoke(cli_main, ["tokens", "list", "--json"], env=env)
    assert listed.exit_code == 0 and '"pacs-script"' in listed.output and token not in listed.output
    assert runner.invoke(cli_main, ["tokens", "revoke", "pacs-script"], env=env).exit_code == 0
    assert client.get("/api/jobs", headers=bearer).status_code == 401


def test_admin_page_disables_a_user_and_revokes_a_token(client: TestClient, settings: Settings) -> None:
    with open_store(settings)[1].begin() as s:
        token = add_token(s, "robot", "viewer")
    viewer = TestClient(client.app)
    login(viewer, "vera")
    csrf = login(client, "adam")
    page = client.get("/admin/accounts")
    assert page.status_code == 200 and "vera" in page.text and "robot" in page.text
    assert viewer.get("/admin/accounts").status_code == 403
    r = client.post("/admin/accounts", data={"action": "disable", "name": "vera", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert viewer.get("/api/jobs").status_code == 401
    r = client.post("/admin/accounts", data={"action": "revoke", "name": "robot", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # Without the CSRF token nothing happens.
    assert client.post("/admin/accounts", data={"action": "enable", "name": "vera"}).status_code == 403
    assert ("adam", "user:disable", "testclient") in _audit(settings)


def test_docs_and_schema_need_a_login(client: TestClient) -> None:
    client.cookies.clear()
    assert client.get("/openapi.json").status_code == 401
    r = client.get("/docs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    login(client, "vera")
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_nul_in_an_image_name_is_404(client: TestClient) -> None:
    login(client, "vera")
    assert client.get("/jobs/abc/images/%00.png").status_code == 404
    assert client.get("/jobs/abc/images/..%2F..%2Fetc.png").status_code == 404
