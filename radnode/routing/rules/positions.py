"""YAML composed with the source position of every key and value.

PyYAML silently keeps the last of two duplicate keys and forgets where a value
stood; this loader refuses duplicates, refuses alias bombs, and indexes every
position so an error can be reported as ``FILE:LINE:COLUMN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

# Refuse files whose aliases expand to absurd sizes (a "billion laughs" file
# would otherwise hang validation and the reload thread).
_MAX_NODES = 100_000


_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class _Pos:
    """Where a path's key and value start (0-based, as PyYAML marks are)."""

    key: yaml.Mark | None
    value: yaml.Mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of hiding them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, yaml.Mark, yaml.Mark]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merged keys may legitimately be overridden
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except Exception:  # noqa: BLE001 - the base class reports it with a mark
                continue
            if key in seen:
                self.duplicates.append((key, key_node.start_mark, seen[key]))
            else:
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _index_positions(loader: _Loader, root: yaml.Node) -> dict[tuple[Any, ...], _Pos]:
    """Map every path (as pydantic spells ``loc``) to its source position."""
    index: dict[tuple[Any, ...], _Pos] = {(): _Pos(None, root.start_mark)}
    budget = [_MAX_NODES]
    active: set[int] = set()

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        budget[0] -= 1
        if budget[0] < 0 or id(node) in active:
            return
        active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        continue
                    key = loader.construct_object(key_node, deep=True)
                    index[path + (key,)] = _Pos(key_node.start_mark, value_node.start_mark)
                    walk(value_node, path + (key,))
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    index[path + (i,)] = _Pos(None, item.start_mark)
                    walk(item, path + (i,))
        finally:
            active.discard(id(node))

    walk(root, ())
    if budget[0] < 0:
        raise _TooComplex(root.start_mark)
    return index


class _TooComplex(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        self.mark = mark


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem:
        return "tab character found; YAML indentation and separators must use spaces"
    if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
        ctx_line = exc.context_mark.line + 1
        return f"YAML syntax error: {problem} ({exc.context} started on line {ctx_line})"
    return f"YAML syntax error: {problem}"
