"""Read a routing file: decode, compose with positions, validate the schema,
cross-check, and either return a :class:`RoutingConfig` or raise
:class:`RoutingFileError` listing every problem at once (never half a file)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import (
    ValidationError,
)

from radnode.routing.rules.checks import (
    DEFAULT_APPLICATIONS,
    KnownApplications,
    _cross_check,
    _normalize_known,
)
from radnode.routing.rules.issues import (
    RoutingFileError,
    RoutingIssue,
    _pydantic_issues,
    _Reporter,
)
from radnode.routing.rules.positions import (
    _index_positions,
    _Loader,
    _TooComplex,
    _yaml_message,
)
from radnode.routing.rules.schema import RoutingConfig


def parse_rules(
    text: str,
    known_applications: KnownApplications = DEFAULT_APPLICATIONS,
    *,
    file: str = "<string>",
) -> RoutingConfig:
    """Validate routing YAML given as text; raise :class:`RoutingFileError`.

    This is the single entry point used by :func:`load_rules`, the reload
    watcher and the CLI, so they all report identical positions.
    """
    known = _normalize_known(known_applications)
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                raise RoutingFileError(
                    [RoutingIssue(file, 1, 1, "file is empty; expected a mapping with 'version' and 'rules'")]
                )
            data = loader.construct_document(root)
            index = _index_positions(loader, root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RoutingFileError([RoutingIssue(file, line, col, _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:  # e.g. reader errors without marks
        raise RoutingFileError([RoutingIssue(file, 1, 1, f"YAML error: {exc}")]) from None
    except _TooComplex as exc:
        raise RoutingFileError(
            [RoutingIssue(file, exc.mark.line + 1, exc.mark.column + 1, "file too complex (aliases expand too far)")]
        ) from None

    rep = _Reporter(file, index)
    for key, mark, first in loader.duplicates:
        rep.issues.append(
            RoutingIssue(
                file, mark.line + 1, mark.column + 1, f"duplicate key {key!r} (first defined on line {first.line + 1})"
            )
        )
    if not isinstance(data, dict):
        rep.add((), "top level must be a mapping with 'version' and 'rules'")
        raise RoutingFileError(rep.issues)

    config: RoutingConfig | None = None
    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        _pydantic_issues(exc, rep)
    except RecursionError:
        rep.add((), "file contains a recursive alias")
    _cross_check(data, known, rep)
    if rep.issues or config is None:
        raise RoutingFileError(rep.issues)
    return config


def load_rules(
    path: str | Path,
    known_applications: KnownApplications = DEFAULT_APPLICATIONS,
) -> RoutingConfig:
    """Read and validate a routing file; raise :class:`RoutingFileError`."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RoutingFileError([RoutingIssue(file, 1, 1, f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_rules(decode_rules(raw, file), known_applications, file=file)


def decode_rules(raw: bytes, file: str) -> str:
    """Decode file bytes as UTF-8, reporting the position of a bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise RoutingFileError([RoutingIssue(file, line, column, "file is not valid UTF-8")]) from None
