"""The house rules of radnode's packages, computed from the code.

Every ``import`` and ``from … import`` is read with :mod:`ast` — at module
level, inside functions and under ``TYPE_CHECKING`` alike — plus string
constants that name a radnode module for ``importlib`` ("radnode.x.y:Class").
A cycle between subpackages hidden inside a function is still a cycle: it
means neither side can be understood or tested without the other.

Only the composition roots, which wire the stages together, may import
anything; no stage imports them.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from pathlib import Path

import radnode

ROOT = Path(radnode.__file__).parent

#: Modules and packages that compose stages into processes and commands.
COMPOSITION_ROOTS = frozenset({"cli", "composition", "commands", "demo"})

#: radnode's layers, top to bottom; an import points to a lower layer only.
LAYERS: tuple[frozenset[str], ...] = (
    COMPOSITION_ROOTS,
    frozenset({"web"}),
    frozenset({"jobs", "training"}),
    frozenset({"listener", "routing"}),
    frozenset({"analyzers", "sr_writer"}),
    frozenset({"queue", "peers", "metrics"}),
    # audit trail (written by listener and web) and de-identification (used when a destination is external)
    frozenset({"audit", "deid"}),
    frozenset({"store"}),
    frozenset({"settings"}),
    frozenset({"synth", "cli_output"}),
    # tls builds ssl contexts from certificate files (duck-typed settings sections); it imports no radnode module
    frozenset({"model", "uids", "logconfig", "tls", "local_secret"}),
)

#: What `radnode/settings.py` may import from radnode: the neutral layer only.
NEUTRAL = frozenset({"model", "uids"})

#: Modules that start conversations with other systems; the listener only receives.
OUTBOUND_MODULES = ("radnode.peers", "radnode.jobs.pull")
OUTBOUND_LIBRARIES = ("dicomweb_client", "requests", "smtplib", "httpx", "urllib.request")

#: "radnode.analyzers.glioma.analyzer:GliomaAnalyzer": a module named for importlib.
_PLUGIN_PATH = re.compile(r"^radnode(\.[a-z_][a-z0-9_]*)+:[A-Za-z_]\w*$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in *path*, wherever it sits."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _PLUGIN_PATH.match(node.value):
            found.append((node.lineno, node.value.partition(":")[0]))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def _unit(module: str) -> str | None:
    """The part of radnode a module belongs to: its subpackage, or the top-level module."""
    parts = module.split(".")
    if parts[0] != "radnode" or len(parts) < 2 or parts[1] not in _units():
        return None
    return parts[1]


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "migrations/versions" not in p.as_posix())


def package_graph() -> dict[str, dict[str, list[str]]]:
    """unit → imported unit → where ("file:line")."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in _sources():
        src = _unit(_module_name(path))
        if src is None:
            continue
        for line, target in _imports(path):
            dst = _unit(target)
            if dst is None or dst == src:
                continue  # `from radnode import __version__` and the like
            graph[src][dst].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return graph


@functools.cache
def _units() -> frozenset[str]:
    return frozenset({p.stem if p.is_file() else p.name for p in ROOT.iterdir() if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()})


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_code() -> None:
    graph = package_graph()
    # Known edges, so a broken parser cannot pass the cycle test by seeing nothing.
    assert "store" in graph["routing"], graph["routing"]
    assert "settings" in graph["listener"]
    assert "peers" in graph["jobs"]
    # Imports inside functions count (the C-GET handler is imported lazily).
    assert "listener" in graph["jobs"]
    # A cycle planted in a synthetic graph is found.
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]


def test_no_package_cycle_outside_the_composition_roots() -> None:
    graph = package_graph()
    stages = {src: {dst: where for dst, where in deps.items() if dst not in COMPOSITION_ROOTS} for src, deps in graph.items() if src not in COMPOSITION_ROOTS}
    cycles = _cycles(stages)
    detail = [
        {a: {b: stages[a][b][:3] for b in cycle if b in stages.get(a, {})} for a in cycle}
        for cycle in cycles
    ]
    assert cycles == [], detail


def test_every_import_points_down_the_layers() -> None:
    graph = package_graph()
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    assert set(graph) | {d for deps in graph.values() for d in deps} <= set(layer), "a new package needs a place in LAYERS"
    upward = {f"{src} -> {dst}": where[:3] for src, deps in graph.items() for dst, where in deps.items() if layer[dst] <= layer[src] and src not in COMPOSITION_ROOTS}
    assert upward == {}


def test_no_stage_imports_a_composition_root() -> None:
    graph = package_graph()
    offenders = {src: {dst: where[:3] for dst, where in deps.items() if dst in COMPOSITION_ROOTS} for src, deps in graph.items() if src not in COMPOSITION_ROOTS}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_listener_only_receives() -> None:
    bad = []
    for path in sorted((ROOT / "listener").rglob("*.py")):
        for line, target in _imports(path):
            if target.startswith(OUTBOUND_MODULES) or target.split(".")[0] in {lib.split(".")[0] for lib in OUTBOUND_LIBRARIES if "." not in lib} or target.startswith(OUTBOUND_LIBRARIES):
                bad.append(f"{path.name}:{line} imports {target}")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in {"associate", "send_c_store", "send_c_move", "send_c_get", "send_c_find"}:
                bad.append(f"{path.name}:{node.lineno} calls .{node.attr}(): an outbound association")
    assert bad == []


def test_settings_imports_no_stage() -> None:
    targets = {_unit(t) for _, t in _imports(ROOT / "settings.py")} - {None}
    assert targets <= NEUTRAL, targets


def test_the_neutral_layer_imports_only_itself_and_uids() -> None:
    for path in sorted((ROOT / "model").rglob("*.py")):
        targets = {_unit(t) for _, t in _imports(path)} - {None}
        assert targets <= {"model", "uids"}, (path.name, targets)


def test_the_live_classifier_does_not_load_the_training_corpus_generator() -> None:
    import subprocess
    import sys

    code = "import sys, radnode.routing.classifier, radnode.routing.router; print(sorted(m for m in sys.modules if m.startswith('radnode.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "radnode.routing.classifier" in loaded
    assert "radnode.routing.corpus" not in loaded and "radnode.synth" not in loaded
