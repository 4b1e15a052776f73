"""An application's declared options as form fields, and back: the form's
strings validated by the registry's one option check."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from radnode.analyzers.registry import OptionsError, parse_options
from radnode.model.analysis import AnalyzerSpec
from radnode.web.errors import ServiceError

log = structlog.get_logger(__name__)


@dataclass
class OptionField:
    """One form field derived from an application's pydantic options model."""

    name: str
    kind: str  # checkbox | select | number | text
    label: str
    default: Any
    choices: list[str] = field(default_factory=list)
    required: bool = False
    help: str = ""


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def option_fields(model: type[BaseModel]) -> list[OptionField]:
    """bool → checkbox, Literal → select, int/float → number, anything else → text."""
    out = []
    for name, info in model.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        label = name.replace("_", " ").capitalize()
        help_text = info.description or ""
        if annotation is bool:
            out.append(OptionField(name, "checkbox", label, bool(default), help=help_text))
        elif typing.get_origin(annotation) is typing.Literal:
            out.append(OptionField(name, "select", label, default, [str(c) for c in typing.get_args(annotation)], help=help_text))
        elif annotation in (int, float):
            out.append(OptionField(name, "number", label, default, required=not optional and info.is_required(), help=help_text))
        else:
            out.append(OptionField(name, "text", label, "" if default is None else default, required=info.is_required(), help=help_text))
    return out


def options_from_form(spec: AnalyzerSpec, form: dict[str, str]) -> dict[str, Any]:
    """Form strings → validated options (an unchecked box is False, an empty field is unset)."""
    raw: dict[str, Any] = {}
    for f in option_fields(spec.options):
        key = f"opt_{f.name}"
        if f.kind == "checkbox":
            raw[f.name] = key in form
        elif form.get(key, "") != "":
            raw[f.name] = form[key]
    return validate_options(spec, raw)


def validate_options(spec: AnalyzerSpec, raw: dict[str, Any]) -> dict[str, Any]:
    """The registry's one option check; the options as the pull records them."""
    try:
        return parse_options(spec, raw).model_dump(mode="json", exclude_defaults=True)
    except OptionsError as exc:
        raise ServiceError(422, str(exc)) from exc
