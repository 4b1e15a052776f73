"""How every ``radnode … list`` command prints: JSON, or one line per row, or "no X".

Written once so that ``--json`` output is always the same rows the text shows
and an empty result always says so in words.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click


def echo_rows(
    rows: Sequence[Any],
    *,
    as_json: bool,
    empty: str,
    render: Callable[[Any], str | Iterable[str]],
    header: str | None = None,
    indent: int | None = 2,
) -> None:
    """Print *rows* as JSON (``--json``), else *header* and *render*'s line(s) per row, else *empty*."""
    if as_json:
        click.echo(json.dumps(list(rows), indent=indent))
        return
    if not rows:
        click.echo(empty)
        return
    if header is not None:
        click.echo(header)
    for row in rows:
        out = render(row)
        for line in [out] if isinstance(out, str) else out:
            click.echo(line)
