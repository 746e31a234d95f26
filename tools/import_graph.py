"""Measure the package's import graph: its largest import cycle and its registries.

Run: python -m tools.import_graph [--package attnblocks]

Reads the sources with ``ast`` (nothing is imported). An edge ``a -> b`` is an import of
package module ``b`` inside module ``a``, at module level or inside a function; ``TYPE_CHECKING``
imports are left out (they never run). Cycles are the strongly connected components of that
graph. A registry is a module-level dict assigned an empty ``{}`` whose name is in capitals
(``_HOOKS: dict[type, dict[str, Any]] = {}``); a hand-written class-hierarchy lookup is a loop
``for t in type(x).__mro__``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """Line numbers of statements under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def scan(root: Path) -> dict:
    """Edges (with whether each is function-level), registries and MRO lookups per module."""
    modules = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    edges: dict[str, dict[str, bool]] = {m: {} for m in modules}
    registries: list[str] = []
    lookups: list[str] = []
    statements: list[tuple[str, str]] = []  # function-level import statements (from, to)
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_blocks(tree)
        is_pkg = path.name == "__init__.py"
        function_level: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(fn):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        function_level.add(sub.lineno)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    base = _resolve(mod, is_pkg, node)
                    # "from . import x" imports submodule x when it is one
                    targets = [
                        f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                        for a in node.names
                    ]
                for t in targets:
                    while t and t not in modules:
                        t = t.rpartition(".")[0]
                    if t and t != mod and t in modules:
                        inner = node.lineno in function_level
                        edges[mod][t] = edges[mod].get(t, True) and inner
                        if inner:
                            statements.append((mod, t))
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node in tree.body:
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                value = node.value
                if (
                    not mod.endswith("._cache")  # its slot tables are caches, not registries
                    and isinstance(target, ast.Name)
                    and target.id.lstrip("_").isupper()
                    and isinstance(value, ast.Dict)
                    and not value.keys
                ):
                    registries.append(f"{mod}.{target.id}")
            if isinstance(node, ast.For) and ast.unparse(node.iter).endswith(".__mro__"):
                lookups.append(f"{mod}:{node.lineno}")
    return {"edges": edges, "registries": registries, "lookups": lookups, "inner": statements}


def strongly_connected(edges: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Tarjan's strongly connected components, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return sorted(out, key=len, reverse=True)


def report(package: str = "attnblocks") -> str:
    root = Path(__file__).resolve().parents[1] / package
    data = scan(root)
    edges = data["edges"]
    comps = [c for c in strongly_connected(edges) if len(c) > 1]
    lines = []
    if comps:
        big = set(comps[0])
        only = [(a, b) for a in big for b, fn in edges[a].items() if b in big and fn]
        stmts = [(a, b) for a, b in data["inner"] if a in big and b in big]
        short = ", ".join(m.removeprefix(package + ".") for m in comps[0])
        lines.append(f"largest import cycle: {len(comps[0])} modules ({short})")
        lines.append(
            f"  {len(stmts)} function-level import statements inside it; {len(only)} of its "
            f"edges exist only as function-level imports"
        )
        lines.append(f"other cycles: {[len(c) for c in comps[1:]]}")
    else:
        lines.append("largest import cycle: none")
    reg = data["registries"]
    lines.append(f"registries (module-level dicts filled at import): {len(reg)}")
    lines.extend(f"  {r}" for r in reg)
    n = len(data["lookups"])
    lines.append(f"hand-written class-hierarchy lookups (for t in type(x).__mro__): {n}")
    lines.extend(f"  {loc}" for loc in data["lookups"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="attnblocks")
    print(report(parser.parse_args().package))


if __name__ == "__main__":
    main()
