"""The admin page for taking access back: users (disable, enable, delete,
unlock, reset password) and API tokens (revoke).

Same functions as ``radnode users …`` / ``radnode tokens …``; every change
ends the affected sessions at once and is audited with the admin's name and
address.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from radnode.store.accounts import LoginThrottleRow
from radnode.web import deps
from radnode.web.auth import (
    AccountError,
    Principal,
    delete_user,
    list_tokens,
    list_users,
    require,
    reset_password,
    revoke_token,
    set_disabled,
    unlock,
)
from radnode.web.routers.pages import _redirect, render

router = APIRouter(include_in_schema=False)


def _context(request: Request) -> dict[str, Any]:
    with deps.db(request)() as s:
        locks = {r.key[5:]: r for r in s.query(LoginThrottleRow).filter(LoginThrottleRow.key.like("user:%")).all()}
        users = [
            {"name": u.username, "role": u.role, "disabled": u.disabled, "failures": locks[u.username].failures if u.username in locks else 0,
             "locked": u.username in locks and locks[u.username].locked_until is not None}
            for u in list_users(s)
        ]
        tokens = [{"name": t.name, "role": t.role, "revoked": t.revoked, "created": t.created_at, "last_used": t.last_used_at} for t in list_tokens(s)]
    return {"users": users, "tokens": tokens}


@router.get("/admin/accounts")
def accounts_page(request: Request, _: Principal = Depends(require("admin"))) -> Response:
    return render(request, "accounts.html", **_context(request))


@router.post("/admin/accounts")
async def accounts_action(request: Request, who: Principal = Depends(require("admin"))) -> Response:
    form = await request.form()
    action, name = str(form.get("action", "")), str(form.get("name", ""))[:64]
    source = request.client.host if request.client else None
    ops = {
        "disable": lambda s: set_disabled(s, name, True, actor=who.name, source=source),
        "enable": lambda s: set_disabled(s, name, False, actor=who.name, source=source),
        "delete": lambda s: delete_user(s, name, actor=who.name, source=source),
        "unlock": lambda s: unlock(s, name, actor=who.name, source=source),
        "reset-password": lambda s: reset_password(s, name, str(form.get("password", "")), actor=who.name, source=source),
        "revoke": lambda s: revoke_token(s, name, actor=who.name, source=source),
    }
    if action not in ops:
        return render(request, "accounts.html", status=400, error=f"unknown action {action[:40]!r}", **_context(request))
    if action in ("disable", "delete") and name == who.name:
        return render(request, "accounts.html", status=400, error="an admin cannot disable or delete itself here (use the CLI)", **_context(request))

    def apply() -> str | None:
        try:
            with deps.db(request).begin() as s:
                ops[action](s)
        except AccountError as exc:
            return str(exc)
        return None

    error = await run_in_threadpool(apply)
    if error:
        return render(request, "accounts.html", status=400, error=error, **_context(request))
    return _redirect("/admin/accounts", f"{action}: {name} done")
