#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a loop.

For every crate under crates/, the modules of each directory level (the files and sub-directories
of src/, then of every module directory such as src/rollout/) form a graph: an edge a -> b when a
file of module a names `crate::…::b` or `super::b` (resolved to that level). A module directory
counts as one node at its parent's level; its own `mod.rs` re-exporting its children is not an
edge. A name the crate root re-exports (`crate::StoreError`) counts as its module, and doc
comments count (a doc link is a dependency too); test modules (from `#[cfg(test)]` to the end
of a file) are ignored.

    python3 tools/check-module-cycles.py        # prints the layering, exits 1 on a cycle
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^}]*)\}", re.S)


def module_path(src: Path, file: Path) -> tuple:
    """The module path of a file: src/a/b.rs -> (a, b); src/a/mod.rs -> (a,); lib.rs -> ()."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def code_of(file: Path) -> str:
    """The file up to its test module. Comments count: a doc link names a dependency too."""
    text = file.read_text()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return text


def root_reexports(src: Path) -> dict:
    """Names the crate root re-exports (`pub use a::{B, C}`) -> the module they come from."""
    root = src / "lib.rs" if (src / "lib.rs").exists() else src / "main.rs"
    names = {}
    text = re.sub(r"//.*", "", root.read_text())
    for m in re.finditer(r"pub use\s+([a-z_][a-z0-9_]*)::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", text):
        module, items = m.group(1), m.group(2).strip("{}")
        for item in items.split(","):
            name = item.strip().split(" as ")[-1].strip()
            if name:
                names[name] = module
    return names


def references(code: str, here: tuple) -> set:
    """Absolute module paths (as tuples of names) that `code`, in module `here`, refers to."""
    refs = set()

    def resolve(anchor: str, rest: list) -> tuple:
        if anchor == "crate":
            return tuple(rest)
        if anchor == "self":
            return tuple(here) + tuple(rest)
        return tuple(here[:-1]) + tuple(rest)

    for m in PATH_RE.finditer(code):
        anchor, rest = m.group(1), [p for p in m.group(2).split("::") if p]
        refs.add(resolve(anchor, rest))
    for m in USE_GROUP_RE.finditer(code):
        anchor = m.group(1)
        prefix = [p for p in m.group(2).split("::") if p]
        for item in m.group(3).split(","):
            name = item.strip().split("::")[0].split(" ")[0]
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or ""):
                refs.add(resolve(anchor, prefix + [name]))
    return refs


def tangles(nodes, edges):
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on_stack.add(n)
        for m in edges.get(n, ()):
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on_stack:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            component = []
            while True:
                m = stack.pop()
                on_stack.discard(m)
                component.append(m)
                if m == n:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def check_crate(crate: Path) -> list:
    src = crate / "src"
    files = sorted(src.rglob("*.rs"))
    modules = {module_path(src, f): f for f in files}
    reexports = root_reexports(src)
    problems = []
    # Every directory level that holds modules: the crate root, then each module directory.
    levels = {()} | {m[:-1] for m in modules if m}
    for level in sorted(levels):
        children = {m[len(level)] for m in modules if len(m) > len(level) and m[: len(level)] == level}
        edges = {}
        for path, file in modules.items():
            if len(path) <= len(level) or path[: len(level)] != level:
                continue
            here_child = path[len(level)]
            for ref in references(code_of(file), path):
                if len(ref) == 1 and ref[0] in reexports:
                    ref = (reexports[ref[0]],)
                if len(ref) <= len(level) or ref[: len(level)] != level:
                    continue
                target = ref[len(level)]
                if target in children and target != here_child:
                    edges.setdefault(here_child, set()).add(target)
        where = f"{crate.name}/src/" + "/".join(level)
        for component in tangles(children, edges):
            inner = ", ".join(
                f"{a} -> {b}" for a in component for b in sorted(edges.get(a, ())) if b in component
            )
            problems.append(f"{where}: modules import each other: {inner}")
    return problems


def main() -> int:
    problems = []
    crates = sorted(p for p in (ROOT / "crates").iterdir() if (p / "src").is_dir())
    for crate in crates:
        problems.extend(check_crate(crate))
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"no module cycles in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
