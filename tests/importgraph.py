"""The import graph of pipeline/, read from the source (ast): no module is imported to build it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pipeline").rglob("*.py"))


def _resolve(dotted: str) -> str | None:
    base = dotted.replace(".", "/")
    for cand in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / cand).is_file():
            return cand
    return None


def imports(module: str, top_level_only: bool = False) -> set[str]:
    """The pipeline files `module` imports (module level and, unless `top_level_only`, inside functions)."""
    tree = ast.parse((ROOT / module).read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            for alias in node.names:
                hit = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                if hit:
                    found.add(hit)
        elif isinstance(node, ast.Import):
            found |= {
                hit for alias in node.names if alias.name.split(".")[0] == "pipeline" and (hit := _resolve(alias.name))
            }
    found.discard(module)
    return found


def packages(module: str) -> set[str]:
    """The `__init__.py` files Python runs before `module` (its parent packages)."""
    parts = Path(module).parent.parts
    return {str(Path(*parts[:i], "__init__.py")) for i in range(1, len(parts) + 1)} - {module}


def closure(module: str, leaves: set[str] = frozenset()) -> set[str]:
    """`module` and everything it imports, transitively, with their packages' `__init__.py`; a module in `leaves`
    adds only its top-level imports."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(m, top_level_only=m in leaves) | packages(m))
    return seen


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the import cycles."""
    graph = {m: imports(m) for m in modules()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for m in graph:
        if m not in index:
            visit(m)
    return out
