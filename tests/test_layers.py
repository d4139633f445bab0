"""The package's layering, checked from source (no module is imported).

README.md ("How it is built") states the layers as a table; this test parses that table,
reads every module's imports with ``ast`` (top-level and inside functions, absolute and
relative) and fails on

* an import from a lower layer to a higher one, or between two packages of one layer;
* any import circle between modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "analogmem"


def layer_table(readme: str) -> dict[str, int]:
    """``{package or base module name: layer}`` from README's layer table."""
    start = readme.index("<!-- layers:")
    rows = re.findall(r"^\|\s*(\d+)\s*\|([^|]*)\|", readme[start:], flags=re.M)
    table: dict[str, int] = {}
    for layer, names in rows:
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", names):
            table[name] = int(layer)
    return table


def module_files() -> dict[str, Path]:
    """Dotted module name → file for every module of the package."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports (``from X import sub`` → ``X.sub`` when
    that is a module of its own)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules or _is_extension(f"{prefix}.{a.name}")
                       else prefix for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "analogmem" or t.startswith("analogmem."))
    return found


def _is_extension(dotted: str) -> bool:
    return dotted in ("analogmem.emulator._kernels", "analogmem.storage._codec")


def unit_of(module: str) -> str:
    """The layer-table entry a module belongs to: its subpackage, a base module, or the face."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def check(table: dict[str, int], graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for mod, targets in sorted(graph.items()):
        u = unit_of(mod)
        if u not in table:
            problems.append(f"{mod}: package {u!r} is not in README's layer table")
            continue
        for t in sorted(targets):
            v = unit_of(t)
            if v not in table:
                problems.append(f"{mod} imports {t}: {v!r} is not in README's layer table")
            elif u == v or (table[u] == 0 and table[v] == 0) or (table[u] == table[v] == max(table.values())):
                continue  # own package; base modules among themselves; the face among itself
            elif table[v] >= table[u]:
                problems.append(f"{mod} (layer {table[u]}, {u}) imports {t} (layer {table[v]}, {v}): "
                                f"{'upward' if table[v] > table[u] else 'between packages of one layer'}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def build_graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: imports_of(m, p, set(files)) - {m} for m, p in files.items()}


def test_readme_states_every_package_in_a_layer():
    table = layer_table((ROOT / "README.md").read_text())
    assert table["emulator"] < table["calibrate"] < table["storage"] < table["jobs"] < table["cli"]
    units = {unit_of(m) for m in module_files()}
    assert units <= set(table), f"packages missing from README's layer table: {sorted(units - set(table))}"


def test_no_import_runs_against_the_layers():
    problems = check(layer_table((ROOT / "README.md").read_text()), build_graph())
    assert not problems, "\n".join(problems)


def test_no_import_circles():
    circles = cycles(build_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("planted", [
    ("analogmem.emulator.bench", "analogmem.instrument"),      # the old bench -> instrument hook
    ("analogmem.calibrate.tidy", "analogmem.storage.stores"),  # calibration reaching up to storage
    ("analogmem.pruning.surp", "analogmem.federated.klms"),    # two methods of one layer
])
def test_a_planted_violation_is_caught(planted):
    graph = build_graph()
    src, dst = planted
    graph[src] = graph[src] | {dst}
    problems = check(layer_table((ROOT / "README.md").read_text()), graph)
    assert any(p.startswith(src) and dst in p for p in problems)


def test_a_planted_circle_is_caught():
    graph = build_graph()
    graph["analogmem.calibrate.tidy"] = graph["analogmem.calibrate.tidy"] | {"analogmem.calibrate.channel"}
    assert any("analogmem.calibrate.tidy" in c for c in cycles(graph))


def test_relative_imports_are_resolved(tmp_path):
    src = "from ..errors import X\nfrom . import reference\nfrom .cells import Y\n"
    path = tmp_path / "bench.py"
    path.write_text(src)
    mods = {"analogmem.errors", "analogmem.emulator.reference", "analogmem.emulator.cells"}
    assert imports_of("analogmem.emulator.bench", path, mods) == mods
