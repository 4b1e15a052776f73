"""Cross-checks pydantic cannot see: application names and their option
schemas (from the analyzer registry), destination names, duplicate rule names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    create_model,
)

from radnode.analyzers.registry import BUILTIN_APPLICATIONS
from radnode.routing.rules.issues import _pydantic_issues, _Reporter
from radnode.routing.rules.schema import RETURN_TO_SENDER

#: Applications a file may name when the caller passes no registry: the
#: declared built-ins (``radnode.analyzers.registry`` holds the one list).
DEFAULT_APPLICATIONS: frozenset[str] = frozenset(BUILTIN_APPLICATIONS)


#: An application registry: names only, or names mapped to an option schema.
#: A schema is either a pydantic model class, a mapping of option name to
#: type (every option optional, unknown options refused), or ``None`` (options
#: not checked).
KnownApplications = Mapping[str, Any] | Iterable[str]


def _normalize_known(known: KnownApplications) -> dict[str, type[BaseModel] | None]:
    """Turn the caller's application registry into name -> options model."""
    if isinstance(known, str):
        known = [known]
    if not isinstance(known, Mapping):
        return {str(name): None for name in known}
    out: dict[str, type[BaseModel] | None] = {}
    for name, schema in known.items():
        if schema is None:
            out[name] = None
        elif isinstance(schema, type) and issubclass(schema, BaseModel):
            out[name] = schema
        elif isinstance(schema, Mapping):
            fields: dict[str, Any] = {opt: (typ | None, None) for opt, typ in schema.items()}
            out[name] = create_model(  # type: ignore[call-overload]
                f"{name}_options", __config__=ConfigDict(extra="forbid"), **fields
            )
        else:
            raise TypeError(f"option schema for {name!r} must be a model, a mapping or None")
    return out


def _cross_check(data: Any, known: Mapping[str, type[BaseModel] | None], rep: _Reporter) -> None:
    """Checks pydantic cannot do alone: names that refer to other things.

    Works on the raw data and tolerates wrong shapes (pydantic reports those),
    so every problem in the file is listed in one go.
    """
    if not isinstance(data, dict):
        return
    dests = data.get("destinations")
    defined: set[str] = set()
    if isinstance(dests, dict):
        defined = {k for k in dests if isinstance(k, str)}
        if RETURN_TO_SENDER in defined:
            rep.add(
                ("destinations", RETURN_TO_SENDER),
                f"{RETURN_TO_SENDER!r} is built in and cannot be redefined",
                at_key=True,
            )
    valid = defined | {RETURN_TO_SENDER}

    def check_dests(loc: tuple[Any, ...], value: Any) -> None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return
        for i, name in enumerate(items):
            if isinstance(name, str) and name.strip() not in valid:
                close = difflib.get_close_matches(name, sorted(valid), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                item_loc = loc + (i,) if not isinstance(value, str) else loc
                rep.add(
                    item_loc,
                    f"unknown destination {name!r}{hint} (defined: {', '.join(sorted(valid))})",
                )

    defaults = data.get("defaults")
    if isinstance(defaults, dict) and "destinations" in defaults:
        check_dests(("defaults", "destinations"), defaults["destinations"])

    rules = data.get("rules")
    if not isinstance(rules, list):
        return
    names: dict[str, int] = {}
    for r, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        name = rule.get("name")
        if isinstance(name, str):
            key = name.strip()
            if key in names:
                first_line = rep.position(("rules", names[key], "name"))[0]
                rep.add(("rules", r, "name"), f"duplicate rule name {key!r} (first used on line {first_line})")
            else:
                names[key] = r
        if "destinations" in rule:
            check_dests(("rules", r, "destinations"), rule["destinations"])
        if "notify" in rule:
            check_dests(("rules", r, "notify"), rule["notify"])
        apps = rule.get("applications")
        if not isinstance(apps, list):
            continue
        for a, app in enumerate(apps):
            app_name = app if isinstance(app, str) else app.get("name") if isinstance(app, dict) else None
            if not isinstance(app_name, str):
                continue
            app_loc: tuple[Any, ...] = ("rules", r, "applications", a)
            name_loc = app_loc if isinstance(app, str) else app_loc + ("name",)
            if app_name.strip() not in known:
                close = difflib.get_close_matches(app_name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                rep.add(
                    name_loc,
                    f"unknown application {app_name!r}{hint} (known: {', '.join(sorted(known))})",
                )
                continue
            schema = known[app_name.strip()]
            options = app.get("options") if isinstance(app, dict) else None
            if schema is not None and isinstance(options, dict):
                try:
                    schema.model_validate(options)
                except ValidationError as exc:
                    _pydantic_issues(exc, rep, prefix=app_loc + ("options",), model=schema)
