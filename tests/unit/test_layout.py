"""The package layout holds: no import circle among odl's modules, counting every import statement (those inside
functions too), and the stages only import downwards."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "odl"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the odl modules its import statements name (all of them, wherever they stand)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("odl"):
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_circle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def include_graph() -> dict[str, set[str]]:
    """C header or source -> the odl headers it #includes (by file name), over kernels_c/, targets/ and templates/."""
    import re
    files = [p for d in ("kernels_c", "targets", "templates") for p in (ROOT / d).rglob("*")
             if p.suffix in (".c", ".h", ".S") or p.name.endswith((".c.j2", ".h.j2"))]
    names = {p.name for p in files}
    graph: dict[str, set[str]] = {p.name: set() for p in files}
    for p in files:
        for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', p.read_text(), re.M):
            inc = Path(inc).name
            if inc in names and inc != p.name:
                graph[p.name].add(inc)
    return graph


def test_no_include_circle_in_c():
    g = include_graph()
    assert "odl_kernels.h" in g and g["main.c"] >= {"protocol.h"}
    assert cycles(g) == []


def test_protocol_takes_its_bytes_from_the_transport_not_the_command_loop():
    """protocol.c uses the byte hooks; they are defined in byte_io.c, not in main.c (which calls protocol.c)."""
    main = (ROOT / "targets/common/main.c").read_text()
    assert "odl_io_putc(uint8_t c) {" not in main
    assert "odl_io_putc(uint8_t c) {" in (ROOT / "targets/common/byte_io.c").read_text()


MAX_FUNCTION_LINES = 100


def test_no_function_longer_than_100_lines():
    """Functions (methods included) stay short enough to read at once; a longer one is split by what it does."""
    long = []
    for f in PKG.rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{f.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert not long, long
