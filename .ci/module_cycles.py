#!/usr/bin/env python3
"""No import circles between the crate's modules (`make lint`).

A module is one file under src/ (a `mod.rs` is its folder's module). An
edge A -> B is any path A names that resolves into B: `use` declarations
(brace groups included) and paths written inline in code
(`crate::observe::metrics::inc(..)`), with `crate::`, `super::` and
`self::` resolved. `cargo modules dependencies` (cargo-modules) draws the
`use` edges alone; inline paths are where most back-references hide, so
this check reads both. Prints every circle with the names that tie it and
exits 1 when there is one. Comments and string literals are skipped.
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "src"
ROOTS = ("lib.rs",)  # the library crate; main.rs is a separate crate


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel == ["lib"]:
        return ()
    return tuple(rel)


def strip_comments_and_strings(text):
    out = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = re.sub(r'r#*"(?:.|\n)*?"#*', '""', out)
    out = re.sub(r'"(?:\\.|[^"\\])*"', '""', out)
    out = re.sub(r"'(?:\\.|[^'\\])'", "' '", out)
    return re.sub(r"//[^\n]*", "", out)


def test_free(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks: tests may reach anywhere."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    m = re.match(r"^(.*?)::\{(.*)\}$", tree, flags=re.S)
    if not m:
        return [re.sub(r"\s+as\s+\w+$", "", tree)]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return [p for part in parts if part.strip() for p in expand_use(f"{prefix}::{part.strip()}")]


def main():
    modules = {}
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".rs") and f != "main.rs":
                modules[module_of(os.path.join(dirpath, f))] = os.path.join(dirpath, f)
    known = set(modules)

    def resolve(path, here):
        segs = [s for s in path.split("::") if s]
        if not segs:
            return None
        if segs[0] == "crate":
            base, segs = (), segs[1:]
        elif segs[0] in ("super", "self"):
            base = here
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
        else:
            return None
        target = base
        for s in segs:
            if target + (s,) in known:
                target = target + (s,)
            else:
                break
        return target

    edges = {}
    for mod, path in modules.items():
        text = test_free(strip_comments_and_strings(open(path, encoding="utf-8").read()))
        # A parent's `mod child;` and `pub use child::X` re-exports are
        # ownership, not use; a parent's own code naming a child is a use.
        code = re.sub(r"\bpub(\([^)]*\))?\s+use\s+[^;]*;", " ", text)
        children = {m[-1] for m in known if len(m) == len(mod) + 1 and m[: len(mod)] == mod}
        names = []
        for m in re.finditer(r"\buse\s+([^;]*);", code):
            tree = m.group(1).strip()
            first = re.split(r"::|\s", tree, maxsplit=1)[0]
            if first in children:
                tree = "self::" + tree
            if tree.split("::")[0] in ("crate", "super", "self"):
                names += expand_use(tree)
        names += re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", code)
        for child in children:
            names += ["self::" + n for n in re.findall(rf"(?<![:\w]){child}((?:::\w+)+)", code) and [child]]
        for name in names:
            target = resolve(name, mod)
            if target is None or target == mod:
                continue
            edges.setdefault(mod, {}).setdefault(target, set()).add(name.split("::")[-1])

    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
                sccs.append(comp)

    for v in sorted(known):
        if v not in index:
            visit(v)

    name = lambda m: "crate::" + "::".join(m) if m else "crate"
    n_edges = sum(len(t) for t in edges.values())
    for comp in sccs:
        inside = set(comp)
        print(f"circle of {len(comp)} modules:")
        for a in sorted(comp):
            for b in sorted(set(edges.get(a, {})) & inside):
                print(f"  {name(a)} -> {name(b)}: {', '.join(sorted(edges[a][b]))}")
    print(f"{len(known)} modules, {n_edges} import edges, {len(sccs)} circles")
    return 1 if sccs else 0


if __name__ == "__main__":
    sys.exit(main())
