"""Make modules unimportable in this process, as if they were not installed (after pynetdicom's tests).

Used to test that radnode works without an optional dependency, instead of skipping when it happens to be
missing: ``hide("torch", "onnx")`` and every later ``import torch`` raises ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from typing import Any


class _Hider(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by the test)", name=fullname)
        return None


def hide(*names: str) -> None:
    """Hide *names* (top-level packages) for the rest of this process."""
    for loaded in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[loaded]
    sys.meta_path.insert(0, _Hider(names))
