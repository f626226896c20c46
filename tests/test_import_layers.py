"""The layers of the code (docs/layout.md): every import points down, and no module imports itself back
through others. Imports inside functions count as much as those at the top of a file (a function-level
import hides a circle, it does not remove it); imports under `if TYPE_CHECKING:` count for the layers but
not for circles (they never run).

`python tests/test_import_layers.py` prints the figures: modules and folders, import edges, circles,
upward imports, the largest module and the longest functions.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("labeler", "pipelines", "data_schema")

# Top to bottom; a module may import from its own unit or from a unit of a lower layer. A unit is a
# package of labeler/ (labeler.train), a top-level module of labeler/ (labeler.io), `pipelines` or
# `data_schema`.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("labeler.cli",),
    ("labeler.export", "pipelines"),
    ("labeler.review", "labeler.predict"),
    ("labeler.train", "labeler.stages"),
    ("labeler.testing",),
    ("labeler.previews", "labeler.synthetic"),
    ("labeler.stereo", "labeler.segment", "labeler.dataset", "labeler.rig"),
    ("labeler.models", "labeler.io", "labeler.depth"),
    ("labeler.registry", "labeler.doubt", "labeler.errors", "data_schema"),
)
# `labeler/__init__.py` is the public face (`from labeler import open_dataset`), above every layer.
FACADE = "labeler"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    type_only: bool
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an import names (the longest known prefix), or None for outside code."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def edges(known: dict[str, Path] | None = None) -> list[Edge]:
    known = known or modules()
    out: list[Edge] = []
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        typed = _type_checking_lines(tree)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` names the module pkg.mod where there is one
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = _resolve(name, known)
                if target is not None and target != mod:
                    out.append(Edge(mod, target, node.lineno in typed, node.lineno))
    return out


def unit(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if parts[0] == "labeler" and len(parts) > 1 else parts[0]


def layer(mod: str) -> int:
    u = unit(mod)
    for k, units in enumerate(LAYERS):
        if u in units:
            return k
    raise KeyError(f"{mod}: its unit {u} is in no layer of tests/test_import_layers.py (add it)")


def upward(all_edges: list[Edge]) -> list[Edge]:
    """Imports that do not point down: into a higher layer, or across units of one layer."""
    bad = []
    for e in all_edges:
        if FACADE in (e.source, e.target) or unit(e.source) == unit(e.target):
            continue
        if layer(e.target) <= layer(e.source):
            bad.append(e)
    return bad


def circles(all_edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module over the imports that run (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in all_edges:
        if not e.type_only:
            graph.setdefault(e.source, set()).add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def functions(known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    for mod, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield (node.end_lineno or node.lineno) - node.lineno + 1, f"{mod}.{node.name}"


def test_every_unit_has_a_layer():
    for mod in modules():
        if mod != FACADE:
            layer(mod)


def test_no_import_points_up():
    bad = upward(edges())
    assert not bad, "\n".join(f"{e.source}:{e.line} imports {e.target} (not below it)" for e in bad)


def test_no_import_circles():
    found = circles(edges())
    assert not found, "\n".join(" <-> ".join(g) for g in found)


def test_the_check_sees_a_circle_and_an_upward_import():
    """The checks above are not vacuous: a made-up circle and a made-up upward import are caught."""
    fake = [
        Edge("labeler.dataset.reader", "labeler.dataset.index", False, 1),
        Edge("labeler.dataset.index", "labeler.dataset.reader", False, 1),
        Edge("labeler.rig.calibration", "labeler.synthetic.demo", False, 1),
        Edge("labeler.stereo.base", "labeler.segment.base", True, 1),  # same layer, other unit
    ]
    assert circles(fake) == [["labeler.dataset.index", "labeler.dataset.reader"]]
    assert [(e.source, e.target) for e in upward(fake)] == [
        ("labeler.rig.calibration", "labeler.synthetic.demo"),
        ("labeler.stereo.base", "labeler.segment.base"),
    ]


def test_the_walker_reads_function_level_and_from_imports():
    found = {(e.source, e.target) for e in edges()}
    # pipelines/run.py imports the writer at the top, and the gallery inside run_pseudo_label
    assert ("pipelines.run", "labeler.dataset.writer") in found
    assert ("pipelines.run", "labeler.review.gallery") in found


def test_scripts_import_modules_that_exist():
    """Benchmarks and the GPU check import the project inside functions, where a moved module only fails
    when that part runs: every project module they name must exist."""
    known = modules()
    missing = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in PACKAGES and name not in known:
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not missing, "\n".join(missing)


def report() -> str:
    known = modules()
    all_edges = edges(known)
    pairs = {(e.source, e.target) for e in all_edges}
    top = [p for p in (ROOT / "labeler").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()]
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in known.items()), reverse=True)
    longest = sorted(functions(known), reverse=True)[:8]
    return "\n".join(
        [
            f"modules and folders directly in labeler/: {len(top)}",
            f"modules: {len(known)}",
            f"import edges (module -> module): {len(pairs)}",
            f"circles: {len(circles(all_edges))}",
            f"upward imports: {len(upward(all_edges))}",
            f"largest module: {sizes[0][1]} ({sizes[0][0]} lines)",
            "longest functions: " + ", ".join(f"{n} {k}" for k, n in longest),
        ]
    )


if __name__ == "__main__":
    print(report())
