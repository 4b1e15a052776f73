"""Pydantic validation errors in words an admin can act on — written once.

Settings, routing files, model manifests, analyzer options and web forms all
report a pydantic ``ValidationError``; each used to format it its own way.
Here a location becomes ``peers[0].port`` (``rules[2].match (key)`` for a
mapping key) and a problem ``"<where>: <message>"``.
"""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import ValidationError


def format_loc(loc: Iterable[Any]) -> str:
    """``("rules", 2, "match")`` → ``rules[2].match``; ``"[key]"`` marks a mapping key."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out


def error_message(err: Any) -> str:
    """A pydantic error's message without pydantic's "Value error, " prefix."""
    return str(err.get("msg", "")).removeprefix("Value error, ")


def problems(exc: ValidationError, *, top: str = "", pydantic_words: bool = False) -> list[str]:
    """One ``"<where>: <message>"`` per error; *top* names an error at the root.

    *pydantic_words* keeps pydantic's message as is ("Value error, …"), as
    ``radnode config`` has always shown it.
    """
    out = []
    for err in exc.errors():
        where = format_loc(err.get("loc", ())) or top
        msg = str(err.get("msg", "")) if pydantic_words else error_message(err)
        out.append(f"{where}: {msg}" if where else msg)
    return out


def describe(exc: ValidationError, *, top: str = "", sep: str = "; ") -> str:
    """Every problem on one line (or joined by *sep*)."""
    return sep.join(problems(exc, top=top))
