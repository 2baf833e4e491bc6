#!/usr/bin/env python3
"""Who imports whom inside one Rust crate, and the loops among its files.

Usage: scripts/import_graph.py CRATE_SRC_DIR [--max-loop N] [--dot]

A file imports another when it names it by path: `crate::a::b`, `super::x`, `self::x` or a
glob of one (in `use` lines or inline), or names one of its own child modules bare (`child::f`);
unit-test modules (`#[cfg(test)]`, last in a file) are left out. A module's `mod.rs` counts as the
module, so a parent that calls its child and a child that uses its parent are a loop of two. Prints every loop (strongly connected component) with more
than one file, largest first; exits 1 when one is larger than --max-loop (default: no limit).
"""
import argparse
import os
import re
import sys
from collections import defaultdict

COMMENT = re.compile(r"//.*?$|/\*.*?\*/", re.S | re.M)
STRING = re.compile(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"')
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GLOB = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\*\s*;")
CHILD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            out[tuple(parts)] = rel
    return out


def resolve(mods, base, segs):
    """The longest module path that is a file, among base + segs prefixes."""
    path = list(base) + list(segs)
    while path:
        if tuple(path) in mods:
            return tuple(path)
        path.pop()
    return None


def edges(src):
    mods = modules(src)
    graph = defaultdict(set)
    for mod, rel in mods.items():
        text = open(os.path.join(src, rel), encoding="utf-8").read()
        text = STRING.sub('""', COMMENT.sub("", text))
        # Unit tests (last in a file) see their file through `super`: not an import.
        text = text.split("#[cfg(test)]")[0]
        # `self` is this file's module and `super` its parent, whether it is a.rs or a/mod.rs.
        def base_of(kind):
            return {"crate": (), "self": mod, "super": mod[:-1]}[kind]

        def walk(base, segs):
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
            return tuple(base) + tuple(s for s in segs if s and s != "*")

        targets = []
        for m in USE_GROUP.finditer(text):
            base = walk(base_of(m.group(1)), [s for s in m.group(2).split("::") if s])
            for item in re.split(r"[,\s{}]+", m.group(3)):
                segs = [s for s in item.split("::") if s and s != "self"]
                targets.append(walk(base, segs))
        for m in PATH.finditer(text):
            targets.append(walk(base_of(m.group(1)), m.group(2).split("::")))
        for m in GLOB.finditer(text):
            targets.append(walk(base_of(m.group(1)), [s for s in m.group(2).split("::") if s]))
        # A child module named bare (`exports::routes()`, `use self::x` aside) is an import too.
        for child in CHILD.findall(text):
            if re.search(r"(?<![\w:])" + child + r"::", text.replace(f"mod {child};", "")):
                targets.append(mod + (child,))
        for t in targets:
            r = resolve(mods, (), t)
            if r is None or r == mod:
                continue
            graph[mod].add(r)
    return mods, graph


def sccs(nodes, graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            out.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--max-loop", type=int, default=0)
    ap.add_argument("--dot", action="store_true")
    a = ap.parse_args()
    mods, graph = edges(a.src)
    name = lambda m: "::".join(m) or "crate"
    if a.dot:
        print("digraph imports {")
        for v in sorted(graph):
            for w in sorted(graph[v]):
                print(f'  "{name(v)}" -> "{name(w)}";')
        print("}")
        return 0
    loops = sorted((c for c in sccs(sorted(mods), graph) if len(c) > 1), key=len, reverse=True)
    for c in loops:
        print(f"loop of {len(c)}: " + ", ".join(sorted(name(m) for m in c)))
    if not loops:
        print(f"{a.src}: no import loops ({len(mods)} files)")
    biggest = max((len(c) for c in loops), default=0)
    if a.max_loop and biggest > a.max_loop:
        print(f"{a.src}: a loop of {biggest} files (at most {a.max_loop} allowed)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
