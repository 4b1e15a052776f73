"""What the ``radnode`` command promises scripts: exit codes, and exactly one JSON document with ``--json``.

A script that runs ``radnode analyze … --json`` must be able to parse stdout whatever happened, so with
``--json`` every outcome — success, failure, a study that lacks a series, a usage mistake — ends as one JSON
object on stdout, and everything else (logs, nipype's chatter, third-party warnings) goes to stderr.

Every ``radnode … list`` command prints through :func:`echo_rows`, so ``--json`` output is always the
same rows the text shows and an empty result always says so in words.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

import click


class ExitCode(IntEnum):
    """The exit codes of every ``radnode`` command (also in ``radnode --help`` and the README)."""

    DONE = 0
    FAILED = 1
    USAGE = 2  # a mistake in the command line or the configuration
    NEEDS_INPUT = 3  # the study lacks a series the application needs (or a pick needs confirming)


EXIT_CODES_HELP = "Exit codes: 0 done, 1 failed, 2 usage or configuration error, 3 needs input (a required series is missing)."


class CommandFailed(click.ClickException):
    """A command's failure with a state and details a script can act on.

    ``state`` is ``"failed"`` or ``"needs-input"``; ``details`` go into the JSON document beside ``error`` and
    ``state`` (e.g. the missing role and its closest candidates).
    """

    def __init__(self, message: str, *, state: str = "failed", exit_code: int = ExitCode.FAILED, **details: Any) -> None:
        super().__init__(message)
        self.state = state
        self.exit_code = int(exit_code)
        self.details = details

    def document(self) -> dict[str, Any]:
        return {"error": self.message, "state": self.state, **self.details}


def wants_json(args: Sequence[str]) -> bool:
    """True when the command line asks for JSON output (before ``--``)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def print_document(document: dict[str, Any]) -> None:
    """Write one JSON document, and only it, to stdout."""
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


@contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Point file descriptor 1 at stderr while a ``--json`` command works.

    At the descriptor level, not only ``sys.stdout``: nipype's log handlers, C extensions and child processes
    write to fd 1 directly. The JSON document is printed after the block, to the real stdout.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class JsonAwareGroup(click.Group):
    """A click group whose failures become one JSON document when the command line has ``--json``."""

    def main(self, args: Sequence[str] | None = None, *pos: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        if not wants_json(argv):
            return super().main(argv, *pos, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(argv, *pos, **kwargs)
        except CommandFailed as exc:
            print_document(exc.document())
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            print_document({"error": exc.format_message(), "state": "failed", "usage": True})
            sys.exit(ExitCode.USAGE)
        except click.ClickException as exc:
            print_document({"error": exc.format_message(), "state": "failed"})
            sys.exit(exc.exit_code)
        except click.Abort:
            print_document({"error": "aborted", "state": "failed"})
            sys.exit(ExitCode.FAILED)
        except Exception as exc:  # an unexpected error still answers in JSON; the traceback goes to stderr
            import traceback

            traceback.print_exc()
            print_document({"error": f"{type(exc).__name__}: {exc}", "state": "failed"})
            sys.exit(ExitCode.FAILED)
        sys.exit(code if isinstance(code, int) else ExitCode.DONE)


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
