"""A secret the node makes for itself once and keeps in its data folder (mode 0600), never sent.

Used for the web session key and the de-identification key. Several processes of one node (serve, listen,
worker, web) may start at once: the first to link its file in place wins, the others read that one, so
they all agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The secret in *path*; on first use *make* one and store it (0600), first writer wins."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    try:
        os.link(tmp, path)  # first writer wins; a concurrent process reads its secret
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value
