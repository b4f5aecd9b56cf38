"""No import circles in the host package (host_tools/lockerctl) or the firmware (firmware/).

The imports are read with `ast`, not by importing: module-level and function-level imports are
both edges (a function-level import is a circle that waits for its first call), relative imports
are resolved against the importing module's package, and `from package import name` is an edge
to the module `package.name` when there is one, otherwise to the package.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (directory that holds the top-level packages, the top-level names read under it)
TREES = [
    (ROOT / "host_tools", ["lockerctl"]),
    (ROOT / "firmware", ["locker", "hal", "drivers", "main.py", "app.py"]),
]


def module_files(base: Path, tops: list[str]) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under `base`/`tops`."""
    out = {}
    for top in tops:
        path = base / top
        files = [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
        for file in files:
            rel = file.relative_to(base).with_suffix("")
            if "__pycache__" in rel.parts:
                continue
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = file
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _known(dotted: str, modules: dict[str, Path]) -> str | None:
    """The most specific module of ours that `dotted` names (itself or a package above it)."""
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def edges_of(name: str, file: Path, modules: dict[str, Path]) -> set[tuple[str, int]]:
    """{(imported module of ours, line)} for every import in `file`, top level or nested."""
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                targets.append(sub if sub in modules else base)
        for target in targets:
            hit = _known(target, modules)
            if hit is not None and hit != name:
                out.add((hit, node.lineno))
    return out


def import_graph(trees) -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], int] = {}
    for base, tops in trees:
        modules = module_files(base, tops)
        for name, file in modules.items():
            graph.setdefault(name, set())
            for target, line in sorted(edges_of(name, file, modules)):
                graph[name].add(target)
                lines.setdefault((name, target), line)
    return graph, lines


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a list of modules, the first repeated at the end) per strongly connected
    component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(comp, graph) for comp in components]


def _circle_in(comp: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest circle through the component's first module (breadth first)."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError("a strongly connected component without a circle")


def test_the_host_and_the_firmware_have_no_import_circles():
    graph, lines = import_graph(TREES)
    assert "lockerctl.serve" in graph and "locker.bundle" in graph  # the trees were read
    found = cycles(graph)
    shown = [
        " -> ".join(
            f"{a} (line {lines[(a, b)]})" if b else a
            for a, b in zip(circle, circle[1:] + [""], strict=True)
        )
        for circle in found
    ]
    assert not found, "import circles:\n" + "\n".join(shown)


def test_the_reader_finds_circles_and_resolves_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")  # module-level, relative
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import X\n")  # in a function
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import c\nimport json\n")  # in no circle
    graph, _ = import_graph([(tmp_path, ["pkg"])])
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
