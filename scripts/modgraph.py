#!/usr/bin/env python3
"""The module graph of src/: import cycles between files, and file lengths.

usage: scripts/modgraph.py [SRC_DIR] [--max-lines N]

An edge A -> B means a file of module A names something in module B through
a `crate::` or `super::` path (in `use` or in code; test modules, comments
and strings do not count). A cycle is a strongly connected set of files.
A child module's `super::` tie to its own parent is not a cycle edge: that
is Rust's ordinary re-export pattern, not a dependency loop. Paths into the
crate root (`crate::app`) are not edges either: the root only declares the
modules.

Prints every cycle, then "cycles: N", then the file-length figures
(median, p90, max, files over --max-lines). Exits 1 when there is a cycle.
"""
import os
import re
import statistics
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")
max_lines = 400
if "--max-lines" in sys.argv:
    max_lines = int(sys.argv[sys.argv.index("--max-lines") + 1])

files = {}
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith(".rs"):
            rel = os.path.relpath(os.path.join(root, n), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            files[tuple(rel)] = os.path.join(root, n)


def strip(code):
    """Blank out comments, string and char literals (one pass), then drop
    `#[cfg(test)] mod` blocks."""
    out, i, n = [], 0, len(code)
    while i < n:
        c = code[i]
        ident_before = i > 0 and (code[i - 1].isalnum() or code[i - 1] == "_")
        raw = re.match(r'b?r(#*)"', code[i:i + 8]) if not ident_before else None
        if code.startswith("//", i):
            i = code.find("\n", i)
            i = n if i < 0 else i
        elif code.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if code.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif raw:
            end = code.find('"' + raw.group(1), i + raw.end())
            out.append('""')
            i = n if end < 0 else end + 1 + len(raw.group(1))
        elif c == '"':
            j = i + 1
            while j < n and code[j] != '"':
                j += 2 if code[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^'\\])'", code[i:i + 12]):
            i = code.index("'", i + 2 if code[i + 1] != "\\" else i + 3) + 1
            out.append("' '")
        else:
            out.append(c)
            i += 1
    code = "".join(out)
    return re.sub(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{.*", "", code, flags=re.S)


def paths_at(code, i, base):
    """The module paths named at code[i:] (a path, or a `{...}` group)."""
    if i < len(code) and code[i] == "{":
        out, cur, depth, j = [], "", 0, i + 1
        stack = [base]
        while j < len(code):
            c = code[j]
            if c == "{":
                stack.append(stack[-1] + [p for p in cur.split("::") if p])
                cur = ""
            elif c in ",}":
                if cur.strip():
                    out.append(stack[-1] + [p.strip() for p in cur.split("::") if p.strip()])
                cur = ""
                if c == "}":
                    stack.pop()
                    if not stack:
                        return out
            else:
                cur += c
            j += 1
        return out
    m = re.match(r"[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*", code[i:])
    return [base + m.group(0).split("::")] if m else []


def module_of(path):
    for k in range(len(path), 0, -1):
        if tuple(path[:k]) in files:
            return tuple(path[:k])
    return None


edges = {m: set() for m in files}
for m, f in files.items():
    code = strip(open(f, encoding="utf-8").read())
    for hit in re.finditer(r"\b(crate|super)((?:::super)*)::", code):
        ups = 1 + hit.group(2).count("super") if hit.group(1) == "super" else None
        base = [] if ups is None else list(m[: max(0, len(m) - ups)])
        for p in paths_at(code, hit.end(), base):
            t = module_of([x for x in p if x and x != "self"])
            if t is None or t == m or t == ():
                continue
            if ups is not None and t == m[:-1]:
                continue  # a child's super:: tie to its parent
            edges[m].add(t)

# Tarjan's strongly connected components.
index, low, stack, on, sccs = {}, {}, [], set(), []
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
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


for v in sorted(files):
    if v not in index:
        visit(v)
for c in sccs:
    print("cycle: " + ", ".join(sorted(os.path.relpath(files[x], os.path.dirname(src.rstrip("/"))) for x in c)))
print(f"cycles: {len(sccs)}")

lengths = sorted((sum(1 for _ in open(f, encoding="utf-8")), os.path.relpath(f, src)) for f in files.values())
n = [x for x, _ in lengths]
p90 = n[min(len(n) - 1, round(0.9 * (len(n) - 1)))]
over = [f"{name} ({k})" for k, name in lengths if k > max_lines]
print(
    f"files: {len(n)}, lines median {statistics.median(n):.0f}, p90 {p90}, max {n[-1]} ({lengths[-1][1]}); "
    f"over {max_lines}: {', '.join(over) if over else 'none'}"
)
sys.exit(1 if sccs else 0)
