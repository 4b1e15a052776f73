"""Routing-file problems as ``FILE:LINE:COLUMN: message``: the issue type,
the error that carries them, and the reporter that maps a pydantic error
location back to a line and column."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from radnode.model.validation import format_loc
from radnode.routing.rules.positions import _Pos
from radnode.routing.rules.schema import RoutingConfig


@dataclass(frozen=True, order=True)
class RoutingIssue:
    """One problem in a routing file, positioned for an editor (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class RoutingFileError(Exception):
    """A routing file could not be read or is invalid; carries every issue."""

    def __init__(self, issues: Iterable[RoutingIssue]) -> None:
        self.issues: list[RoutingIssue] = sorted(set(issues))
        super().__init__("\n".join(str(issue) for issue in self.issues))


class _Reporter:
    """Collects issues, turning ``loc`` paths into file positions."""

    def __init__(self, file: str, index: Mapping[tuple[Any, ...], _Pos]) -> None:
        self.file = file
        self.index = index
        self.issues: list[RoutingIssue] = []

    def position(self, loc: tuple[Any, ...], *, at_key: bool = False) -> tuple[int, int]:
        """Deepest known prefix of ``loc``; missing keys point at their parent."""
        if loc and loc[-1] == "[key]":
            loc, at_key = loc[:-1], True
        for cut in range(len(loc), -1, -1):
            pos = self.index.get(tuple(loc[:cut]))
            if pos is None:
                continue
            mark = pos.key if (at_key and cut == len(loc) and pos.key is not None) else pos.value
            return mark.line + 1, mark.column + 1
        return 1, 1

    def add(
        self,
        loc: tuple[Any, ...],
        message: str,
        *,
        at_key: bool = False,
        label: tuple[Any, ...] | None = None,
    ) -> None:
        line, column = self.position(loc, at_key=at_key)
        where = format_loc(loc if label is None else label)
        self.issues.append(
            RoutingIssue(self.file, line, column, f"{where}: {message}" if where else message)
        )


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Keys ``model`` accepts at ``loc`` (for "did you mean" hints)."""
    current: Any = model
    for part in loc:
        current = _strip_type(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            found = None
            for fname, finfo in current.model_fields.items():
                if (finfo.alias or fname) == part:
                    found = finfo.annotation
            if found is None:
                return []
            current = found
        elif typing.get_origin(current) in (tuple, list):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _strip_type(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [finfo.alias or fname for fname, finfo in current.model_fields.items()]
    return []


def _strip_type(tp: Any) -> Any:
    """Peel ``Annotated`` and ``X | None`` so the walk reaches the real type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _pydantic_issues(
    exc: ValidationError,
    rep: _Reporter,
    *,
    prefix: tuple[Any, ...] = (),
    model: type[BaseModel] = RoutingConfig,
) -> None:
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            key = loc[-1]
            allowed = _allowed_keys(model, tuple(err["loc"])[:-1])
            text = f"unknown key {key!r}"
            close = difflib.get_close_matches(str(key), allowed, n=1)
            if close:
                text += f"; did you mean {close[0]!r}?"
            if allowed:
                text += f" (allowed: {', '.join(allowed)})"
            rep.add(loc, text, at_key=True)
            continue
        if kind == "missing":
            rep.add(loc, f"missing required key {loc[-1]!r}", label=loc[:-1])
            continue
        if kind == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif isinstance(err.get("input"), (str, int, float, bool)) and kind != "string_pattern_mismatch":
            msg = f"{msg}, got {err['input']!r}"
        if kind == "string_type" and isinstance(err.get("input"), bool | None):
            msg += " (YAML reads unquoted yes/no/on/off/true/false/null as non-strings; quote the value)"
        if kind == "string_pattern_mismatch":
            field_name = loc[-1] if loc else ""
            if field_name in ("url", "fhir", "webhook"):
                msg = f"invalid URL {err.get('input')!r}: write http://… or https://…"
            elif field_name == "hl7":
                msg = f"invalid MLLP address {err.get('input')!r}: write mllp://host:port (mllps:// for TLS)"
            else:
                msg = f"invalid name {err.get('input')!r}: use letters, digits, '_', '.', '-'"
        rep.add(loc, msg)
