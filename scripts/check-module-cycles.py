#!/usr/bin/env python3
"""Fail when the top-level modules of the relay crate import each other in a cycle.

The top-level modules are the children that relay/src/lib.rs declares (`mod x;`,
`pub mod x;`, `pub(crate) mod x;`, inline `mod x { ... }`), whatever they are when the
script runs. A module X depends on Y when any file of X (relay/src/X.rs,
relay/src/X/mod.rs, relay/src/X/**/*.rs) mentions `crate::Y`: in `use crate::Y...`,
`pub use crate::Y...`, `use crate::{Y, Z::w}` (any nesting), or a path expression such as
`crate::Y::thing` anywhere in code, tests included. Comments (`//`, `///`, `//!`,
`/* */`) and string/char literals are ignored. `crate::name` where `name` is not a module
is resolved through lib.rs's own `use` re-exports (`pub use server::{Listeners, run};`
makes `crate::run` a dependency on `server`); other names (items defined in lib.rs,
unknown names) are ignored.

Output: the dependency graph (`X -> Y, Z`, sorted), then either
`no import cycle among N top-level modules` (exit 0) or, for every strongly connected
component of more than one module, its cycles (`a -> b -> a`) and the files and lines
that create each edge inside it (exit 1). Exit 2 on usage errors.

    scripts/check-module-cycles.py [--root relay/src] [--quiet]
    scripts/check-module-cycles.py --self-test

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO_ROOT / "relay" / "src"

IDENT_START = re.compile(r"[A-Za-z_]")
TOKEN = re.compile(r"r#[A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*|::|\S")


# --------------------------------------------------------------------------------------
# Lexing: blank out comments and literals, keep every newline (line numbers stay right).
# --------------------------------------------------------------------------------------


def _is_ident_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def strip_comments_and_literals(src: str) -> str:
    """Return `src` with comments and string/char literals replaced by spaces.

    Newlines are kept so that offsets map to the same line numbers. Handles nested block
    comments, escapes, raw strings (r"..", r#".."#, br#".."#, cr".."), byte/char literals
    and tells lifetimes ('a) from char literals ('a').
    """
    out: list[str] = []
    i, n = 0, len(src)

    def blank(text: str) -> str:
        return "".join("\n" if ch == "\n" else " " for ch in text)

    while i < n:
        c = src[i]
        nxt = src[i + 1] if i + 1 < n else ""
        # Line comment (also /// and //! doc comments).
        if c == "/" and nxt == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
            continue
        # Block comment, possibly nested.
        if c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
            continue
        # Raw strings: r"..", r#".."#, br"..", cr#".."# (not raw identifiers r#ident).
        prev = src[i - 1] if i > 0 else ""
        if not _is_ident_char(prev):
            m = re.match(r'(?:b|c)?r(#*)"', src[i:i + 300])
            if m:
                hashes = m.group(1)
                close = '"' + hashes
                j = src.find(close, i + m.end())
                j = n if j < 0 else j + len(close)
                out.append(blank(src[i:j]))
                i = j
                continue
        # Ordinary (byte, C) strings.
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(blank(src[i:j]))
            i = j
            continue
        # Char literal or lifetime.
        if c == "'":
            if nxt == "\\":
                j = i + 1
                while j < n and src[j] != "'":
                    j += 2 if src[j] == "\\" else 1
                j = min(j + 1, n)
                out.append(blank(src[i:j]))
                i = j
                continue
            if i + 2 < n and src[i + 2] == "'" and nxt != "\n":
                out.append("   ")
                i += 3
                continue
            out.append(c)  # a lifetime or label: keep the quote, the name is harmless
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@dataclass
class Tok:
    text: str
    line: int  # 1-based


def tokenize(src: str) -> list[Tok]:
    stripped = strip_comments_and_literals(src)
    toks: list[Tok] = []
    line, last = 1, 0
    for m in TOKEN.finditer(stripped):
        line += stripped.count("\n", last, m.start())
        last = m.start()
        toks.append(Tok(m.group(0), line))
    return toks


def ident_name(text: str) -> str:
    return text[2:] if text.startswith("r#") else text


def is_ident(text: str) -> bool:
    return bool(IDENT_START.match(text)) or text.startswith("r#")


# --------------------------------------------------------------------------------------
# lib.rs: module declarations and re-exports
# --------------------------------------------------------------------------------------


@dataclass
class UseLeaf:
    path: list[str]  # segments, e.g. ["server", "run"]
    alias: str | None  # `as x`
    glob: bool = False


def parse_use_tree(toks: list[Tok], i: int, prefix: list[str]) -> tuple[list[UseLeaf], int]:
    """Parse one use tree starting at toks[i]; return its leaves and the next index."""
    leaves: list[UseLeaf] = []
    path = list(prefix)
    if i < len(toks) and toks[i].text == "::":  # leading `::` (2015-style absolute)
        i += 1
    while i < len(toks):
        t = toks[i].text
        if t == "{":
            i += 1
            while i < len(toks) and toks[i].text != "}":
                sub, i = parse_use_tree(toks, i, path)
                leaves.extend(sub)
                if i < len(toks) and toks[i].text == ",":
                    i += 1
            return leaves, i + 1
        if t == "*":
            leaves.append(UseLeaf(path, None, glob=True))
            return leaves, i + 1
        if is_ident(t):
            path.append(ident_name(t))
            i += 1
            if i < len(toks) and toks[i].text == "::":
                i += 1
                continue
            alias = None
            if i + 1 < len(toks) and toks[i].text == "as":
                alias = ident_name(toks[i + 1].text)
                i += 2
            leaves.append(UseLeaf(path, alias))
            return leaves, i
        return leaves, i  # anything else ends the tree (malformed input)
    return leaves, i


@dataclass
class Module:
    name: str
    files: list[Path] = field(default_factory=list)
    inline: tuple[int, int] | None = None  # token span inside lib.rs for `mod x { ... }`


@dataclass
class Crate:
    root: Path
    modules: dict[str, Module]
    reexports: dict[str, str]  # name visible at crate root -> top-level module
    globs: list[str]  # modules glob-imported into the crate root (`pub use m::*`)
    lib_toks: list[Tok]


PATH_ATTR = re.compile(
    r'#\s*\[\s*path\s*=\s*"([^"]+)"\s*\]\s*(?:#\s*\[[^\]]*\]\s*)*'
    r"(?:pub\s*(?:\([^)]*\)\s*)?)?mod\s+(?:r#)?([A-Za-z_][A-Za-z0-9_]*)"
)


def module_files(root: Path, name: str, path_attr: str | None) -> list[Path]:
    files: set[Path] = set()
    if path_attr:
        p = (root / path_attr).resolve()
        if p.is_file():
            files.add(p)
        sub = p.parent if p.name == "mod.rs" else p.with_suffix("")
        if sub.is_dir():
            files.update(f.resolve() for f in sub.rglob("*.rs"))
    else:
        if (root / f"{name}.rs").is_file():
            files.add((root / f"{name}.rs").resolve())
        if (root / name).is_dir():
            files.update(f.resolve() for f in (root / name).rglob("*.rs"))
    return sorted(files)


def load_crate(root: Path) -> Crate:
    lib = root / "lib.rs"
    src = lib.read_text(encoding="utf-8")
    path_attrs = {m.group(2): m.group(1) for m in PATH_ATTR.finditer(src)}
    toks = tokenize(src)

    modules: dict[str, Module] = {}
    top_level_uses: list[int] = []
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i].text
        if t in "{[(" and len(t) == 1:
            depth += 1
        elif t in "}])" and len(t) == 1:
            depth -= 1
        elif depth == 0 and t == "mod" and i + 1 < len(toks) and is_ident(toks[i + 1].text):
            name = ident_name(toks[i + 1].text)
            after = toks[i + 2].text if i + 2 < len(toks) else ";"
            if after == "{":  # inline module: find its closing brace
                d, j = 0, i + 2
                while j < len(toks):
                    if toks[j].text == "{":
                        d += 1
                    elif toks[j].text == "}":
                        d -= 1
                        if d == 0:
                            break
                    j += 1
                modules[name] = Module(name, [], inline=(i + 3, j))
                i = j + 1
                continue
            modules[name] = Module(name, module_files(root, name, path_attrs.get(name)))
            i += 2
            continue
        elif depth == 0 and t == "use":
            top_level_uses.append(i + 1)
        i += 1

    reexports: dict[str, str] = {}
    globs: list[str] = []
    for start in top_level_uses:
        leaves, _ = parse_use_tree(toks, start, [])
        for leaf in leaves:
            segs = list(leaf.path)
            while segs and segs[0] in ("crate", "self"):
                segs = segs[1:]
            if not segs or segs[0] not in modules:
                continue  # an external crate, or the root itself
            target = segs[0]
            if leaf.glob:
                globs.append(target)
                continue
            visible = leaf.alias or (segs[-1] if segs[-1] != "self" else (segs[-2] if len(segs) > 1 else None))
            if visible and visible != "_" and visible not in modules:
                reexports[visible] = target
    return Crate(root, modules, reexports, sorted(set(globs)), toks)


# --------------------------------------------------------------------------------------
# References: every `crate::X` in a token stream
# --------------------------------------------------------------------------------------


def crate_references(toks: list[Tok], lo: int = 0, hi: int | None = None):
    """Yield (first segment, line) for every `crate::seg` / `crate::{seg, ...}` use."""
    hi = len(toks) if hi is None else hi
    i = lo
    while i < hi:
        t = toks[i].text
        if t == "crate" and i + 1 < hi and toks[i + 1].text == "::":
            # `$crate::` in macros counts as well: same crate.
            j = i + 2
            if j < hi and is_ident(toks[j].text):
                yield ident_name(toks[j].text), toks[j].line
            elif j < hi and toks[j].text == "{":
                depth, expect_first = 0, True
                while j < hi:
                    tt = toks[j].text
                    if tt == "{":
                        depth += 1
                        expect_first = depth == 1
                    elif tt == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    elif tt == "," and depth == 1:
                        expect_first = True
                    elif expect_first and depth == 1:
                        if is_ident(tt):
                            yield ident_name(tt), toks[j].line
                        expect_first = False
                    j += 1
            i = j
        i += 1


@dataclass
class Ref:
    file: Path
    line: int
    via: str  # the name written after crate::


def build_graph(crate: Crate):
    """Return {module: {dependency: [Ref, ...]}} and a list of notes (unresolved names)."""
    deps: dict[str, dict[str, list[Ref]]] = {m: defaultdict(list) for m in crate.modules}
    unresolved: dict[str, set[str]] = defaultdict(set)

    def resolve(name: str) -> str | None:
        if name in crate.modules:
            return name
        if name in crate.reexports:
            return crate.reexports[name]
        if len(crate.globs) == 1:
            return crate.globs[0]
        return None

    for name, mod in crate.modules.items():
        sources: list[tuple[Path, list[Tok], int, int | None]] = []
        if mod.inline:
            sources.append((crate.root / "lib.rs", crate.lib_toks, mod.inline[0], mod.inline[1]))
        for f in mod.files:
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:  # moved while we ran (a refactoring in progress)
                continue
            sources.append((f, tokenize(text), 0, None))
        for path, toks, lo, hi in sources:
            for seg, line in crate_references(toks, lo, hi):
                if seg in ("self", "super", "crate"):
                    continue
                target = resolve(seg)
                if target is None:
                    unresolved[seg].add(name)
                    continue
                if target != name:
                    deps[name][target].append(Ref(path, line, seg))
    return deps, unresolved


# --------------------------------------------------------------------------------------
# Strongly connected components and representative cycles
# --------------------------------------------------------------------------------------


def tarjan(nodes: list[str], adj: dict[str, list[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adj.get(v, []):
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
            sccs.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(nodes) + 100))
    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(sccs)


def shortest_path(adj: dict[str, list[str]], src: str, dst: str, allowed: set[str]) -> list[str] | None:
    prev: dict[str, str | None] = {src: None}
    q = deque([src])
    while q:
        v = q.popleft()
        if v == dst:
            path = [v]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for w in adj.get(v, []):
            if w in allowed and w not in prev:
                prev[w] = v
                q.append(w)
    return None


def cycles_covering_edges(scc: list[str], adj: dict[str, list[str]]) -> list[list[str]]:
    """One shortest cycle through every edge of the SCC, deduplicated, rotated to start
    at its smallest module."""
    members = set(scc)
    found: dict[tuple[str, ...], None] = {}
    for u in scc:
        for v in adj.get(u, []):
            if v not in members:
                continue
            back = shortest_path(adj, v, u, members)
            if back is None:
                continue
            cyc = [u] + back[:-1]  # u -> v -> ... -> (u)
            k = cyc.index(min(cyc))
            found[tuple(cyc[k:] + cyc[:k])] = None
    return sorted((list(c) for c in found), key=lambda c: (len(c), c))


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def display_path(p: Path, root: Path) -> str:
    """Relative to this repository, else to the repository (.git) holding root, else to
    root's parent."""
    checkout = next((d for d in root.resolve().parents if (d / ".git").exists()), root.parent)
    for base in (REPO_ROOT, checkout, root.parent):
        try:
            return str(p.resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(p)


def source_line(p: Path, line: int, cache: dict[Path, list[str]]) -> str:
    if p not in cache:
        try:
            cache[p] = p.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            cache[p] = []
    lines = cache[p]
    text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    return text if len(text) <= 110 else text[:107] + "..."


def undeclared_entries(crate: Crate) -> list[str]:
    """Top-level .rs files and directories that belong to no declared module (main.rs,
    the binary's root, and bin/ excepted): typically files moved by a refactoring and
    not yet declared."""
    claimed = {f for mod in crate.modules.values() for f in mod.files}
    out = []
    for entry in sorted(crate.root.iterdir()):
        if entry.name in ("lib.rs", "main.rs", "bin"):
            continue
        if entry.is_file() and entry.suffix == ".rs" and entry.resolve() not in claimed:
            out.append(entry.name)
        elif entry.is_dir():
            files = {f.resolve() for f in entry.rglob("*.rs")}
            if files and not files <= claimed:
                out.append(entry.name + "/")
    return out


def check(root: Path, quiet: bool) -> int:
    crate = load_crate(root)
    deps, unresolved = build_graph(crate)
    nodes = sorted(crate.modules)
    adj = {m: sorted(deps[m]) for m in nodes}

    if not quiet:
        print(f"dependency graph of the {len(nodes)} top-level modules of {display_path(root, root)}/lib.rs:")
        for m in nodes:
            print(f"  {m} -> {', '.join(adj[m]) if adj[m] else '(none)'}")
        if crate.reexports:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(crate.reexports.items()))
            print(f"  (crate-root re-exports resolved: {shown})")
        missing = sorted(m for m, mod in crate.modules.items() if not mod.files and not mod.inline)
        if missing:
            print(f"  (declared in lib.rs but no source file found: {', '.join(missing)})")
        undeclared = undeclared_entries(crate)
        if undeclared:
            print(f"  (not declared in lib.rs, not scanned: {', '.join(undeclared)})")
        if unresolved:
            shown = ", ".join(f"crate::{k} (in {', '.join(sorted(v))})" for k, v in sorted(unresolved.items()))
            print(f"  (ignored, not a module nor a re-export from one: {shown})")
        print()

    sccs = [c for c in tarjan(nodes, adj) if len(c) > 1]
    if not sccs:
        print(f"no import cycle among {len(nodes)} top-level modules")
        return 0

    cache: dict[Path, list[str]] = {}
    plural = "s" if len(sccs) > 1 else ""
    print(f"IMPORT CYCLE{'S' if sccs[1:] else ''}: {len(sccs)} strongly connected component{plural} "
          f"of more than one module among {len(nodes)} top-level modules")
    for n_scc, scc in enumerate(sccs, 1):
        members = set(scc)
        cycles = cycles_covering_edges(scc, adj)
        edges = [(u, v) for u in scc for v in adj[u] if v in members]
        if quiet:
            print(f"  component {n_scc}: {', '.join(scc)}: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles))
            continue
        print()
        print(f"component {n_scc}: {len(scc)} modules ({', '.join(scc)}), {len(edges)} edges inside it")
        print("  cycles (a shortest one through every edge):")
        for c in cycles:
            print(f"    {' -> '.join(c + [c[0]])}")
        print("  edges inside the component, fewest references first (the cheapest to cut):")
        for u, v in sorted(edges, key=lambda e: (len(deps[e[0]][e[1]]), e)):
            refs = deps[u][v]
            files = sorted({r.file for r in refs})
            print(f"    {u} -> {v}: {len(refs)} reference{'s' if len(refs) != 1 else ''} in {len(files)} file{'s' if len(files) != 1 else ''}")
            for r in sorted(refs, key=lambda r: (str(r.file), r.line)):
                via = "" if r.via == v else f"  [crate::{r.via} is re-exported from {v}]"
                print(f"      {display_path(r.file, root)}:{r.line}: {source_line(r.file, r.line, cache)}{via}")
    return 1


# --------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------

SELF_TEST_CASES: list[tuple[str, dict[str, str], int, list[str], list[str]]] = [
    (
        # Acyclic: brace import, nested braces, non-mod-rs layout (x.rs + x/inner.rs),
        # commented-out / doc / string / block-comment mentions that would close a cycle.
        "acyclic, comments and strings ignored",
        {
            "lib.rs": "//! crate::b in a doc comment\nmod a;\npub mod b;\npub(crate) mod c;\n"
                      "pub mod x;\npub use c::{run, Thing as Other};\n"
                      "pub fn helper() {}\n",
            "a.rs": "use crate::{b, c::{Thing, more::Deep}};\n"
                    "pub fn f() { crate::helper(); let _ = crate::x::inner::g; }\n",
            "b.rs": "// use crate::a;\n/// see crate::a::f\n/* use crate::a;\n /* nested */ crate::a */\n"
                    "pub fn g() -> &'static str { \"crate::a::f\" }\n"
                    "pub fn h() -> char { '\"' }\n"
                    "pub fn r() -> &'static str { r#\"use crate::a; \"quoted\"\"# }\n"
                    "pub(crate) fn k<'a>(s: &'a str) -> &'a str { s }\n",
            "c/mod.rs": "pub mod more;\npub fn run() {}\npub struct Thing;\n",
            "c/more.rs": "pub struct Deep;\nuse super::Thing;\n",
            "x.rs": "pub mod inner;\n",
            "x/inner.rs": "pub fn g() { crate::c::run() }\n",
        },
        0,
        ["a -> b, c, x", "b -> (none)", "c -> (none)", "x -> c",
         "no import cycle among 4 top-level modules"],
        [],
    ),
    (
        # b -> c through the crate-root re-export `crate::run`, c -> b through a nested
        # brace import in a subdirectory file: one 2-cycle.
        "cycle through a crate::run re-export and a brace import",
        {
            "lib.rs": "mod a;\nmod b;\nmod c;\npub use c::{Listeners, run};\n",
            "a.rs": "use crate::b::thing;\n",
            "b.rs": "pub fn thing() { crate::run() }\n",
            "c/mod.rs": "mod deep;\npub fn run() {}\npub struct Listeners;\n",
            "c/deep.rs": "use crate::{a as _unused_alias_is_fine, b::{thing, other}};\n",
        },
        1,
        ["a -> b", "b -> c", "c -> a, b",
         "component 1: 3 modules (a, b, c)",
         "a -> b -> c -> a", "b -> c -> b",
         "b.rs:1: pub fn thing() { crate::run() }  [crate::run is re-exported from c]",
         "c/deep.rs:1: use crate::{a as _unused_alias_is_fine, b::{thing, other}};"],
        [],
    ),
    (
        "commented-out import does not close a cycle",
        {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::B;\n",
            "b.rs": "pub struct B;\n// use crate::a::A;\n//! crate::a\n/// crate::a::A\n",
        },
        0,
        ["a -> b", "b -> (none)", "no import cycle among 2 top-level modules"],
        ["IMPORT CYCLE"],
    ),
    (
        "two separate cycles, path expressions and pub use",
        {
            "lib.rs": "pub mod p;\npub mod q;\npub mod r;\npub mod s;\nmod t { pub fn f() { crate::s::g() } }\n",
            "p.rs": "pub use crate::q::Q;\n",
            "q.rs": "pub struct Q;\nfn f() -> usize { crate::p::Q; 1 }\n",
            "r.rs": "fn g() { let _ = crate :: s :: g; }\n",
            "s.rs": "pub fn g() {}\n#[cfg(test)]\nmod tests { fn t() { crate::r::x(); } }\n",
        },
        1,
        ["p -> q", "q -> p", "r -> s", "s -> r", "t -> s",
         "2 strongly connected components", "p -> q -> p", "r -> s -> r"],
        ["t -> s -> t"],
    ),
]


def self_test() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="module-cycles-") as tmp:
        for n, (title, files, want_rc, want, not_want) in enumerate(SELF_TEST_CASES, 1):
            root = Path(tmp) / f"case{n}" / "src"
            for rel, text in files.items():
                p = root / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text, encoding="utf-8")
            for quiet in (False, True):
                args = [sys.executable, str(Path(__file__).resolve()), "--root", str(root)]
                if quiet:
                    args.append("--quiet")
                proc = subprocess.run(args, capture_output=True, text=True)
                problems = []
                if proc.returncode != want_rc:
                    problems.append(f"exit {proc.returncode}, expected {want_rc}")
                if not quiet:
                    problems += [f"missing {w!r}" for w in want if w not in proc.stdout]
                    problems += [f"unexpected {w!r}" for w in not_want if w in proc.stdout]
                elif len(proc.stdout.splitlines()) > (1 if want_rc == 0 else 10):
                    problems.append("--quiet printed more than the verdict")
                label = f"case {n} ({title}){' --quiet' if quiet else ''}"
                if problems or proc.stderr:
                    failures += 1
                    print(f"FAIL {label}: {'; '.join(problems)}")
                    print("  stdout:\n    " + proc.stdout.replace("\n", "\n    "))
                    if proc.stderr:
                        print("  stderr:\n    " + proc.stderr.replace("\n", "\n    "))
                else:
                    print(f"ok   {label}")
    # Lexer spot checks.
    lex_cases = [
        ("let c = '\\''; crate::a::x", ["a"]),
        ("fn f<'a>(x: &'a u8) { crate::b::y }", ["b"]),
        ("let s = b\"crate::z\"; let t = br##\"crate::z\"#\"##; crate::c", ["c"]),
        ("let r#type = 1; crate::{d, e::{f, g}, self}", ["d", "e", "self"]),
        ("pub(crate) fn f() {} pub(in crate::h) fn g() {}", ["h"]),
        ("/* /* crate::z */ crate::z */ crate::i", ["i"]),
    ]
    for src, want in lex_cases:
        got = [seg for seg, _ in crate_references(tokenize(src))]
        if got != want:
            failures += 1
            print(f"FAIL lexer {src!r}: got {got}, expected {want}")
        else:
            print(f"ok   lexer {src!r}")
    print(f"self-test: {'all passed' if not failures else f'{failures} failure(s)'}")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", help="the crate's src directory, holding lib.rs (default: relay/src of the repository)")
    ap.add_argument("--quiet", action="store_true", help="print only the verdict")
    ap.add_argument("--self-test", action="store_true", help="run the script's own tests on fake crates")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if args.root:
        root = Path(args.root)
        if not root.is_absolute() and not (root / "lib.rs").is_file() and (REPO_ROOT / root / "lib.rs").is_file():
            root = REPO_ROOT / root
    else:
        root = DEFAULT_ROOT
    if not (root / "lib.rs").is_file():
        print(f"check-module-cycles: no lib.rs in {root}", file=sys.stderr)
        return 2
    return check(root, args.quiet)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
