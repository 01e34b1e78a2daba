#!/usr/bin/env python3
"""Import cycles between the modules of each crate: fails (exit 1) when there is one.

Cargo keeps the crates' dependencies one-way; inside a crate nothing does, so this check does it
for modules. Every `crate::`, `super::` and `self::` path is read, in `use` lines (brace groups
included) and inline in code alike, and resolved against the crate's module tree, following
named `pub use` re-exports to the module that defines the item. A reference from module S to
module T is an edge between the two children of their nearest common ancestor that contain S
and T: between top-level modules for `crate::train::x` from `cost/ledger.rs`, between sibling
files for `super::mla::x` from `model/workspace.rs`. A parent and its own descendants may refer
to each other freely (a `mod.rs` re-exports its children; a child uses its parent's items).
Any strongly connected set of siblings is a cycle, printed with one reference per edge.

    scripts/module-cycles.py                 every crate under crates/
    scripts/module-cycles.py --graph CRATE   the sibling edges of one crate, for reading
    scripts/module-cycles.py --self-test     plants cycles in a scratch crate and expects them found
"""
import os
import re
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(src):
    """Blank out comments, string and char literals, keeping line breaks (for line numbers)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and not re.match(r"[A-Za-z0-9_]", src[i - 1:i] or " "):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + len(hashes) + 2)
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * src.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), or a lifetime ('a), which stays.
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", src[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_use_tree(text, pos):
    """Parse a path or use tree starting at `pos`; returns (list of segment lists, end)."""
    paths, prefix = [], []
    while True:
        m = re.compile(r"\s*(" + IDENT + r"|\*|\{)").match(text, pos)
        if not m:
            break
        tok, pos = m.group(1), m.end()
        if tok == "{":
            while True:
                sub, pos = parse_use_tree(text, pos)
                paths += [prefix + s for s in sub]
                m = re.compile(r"\s*([,}])").match(text, pos)
                if not m:
                    return paths, pos
                pos = m.end()
                if m.group(1) == "}":
                    return paths, pos
                if re.compile(r"\s*\}").match(text, pos):
                    pos = re.compile(r"\s*\}").match(text, pos).end()
                    return paths, pos
        prefix.append(tok)
        m = re.compile(r"\s*::").match(text, pos)
        if not m:
            break
        pos = m.end()
    if prefix:
        m = re.compile(r"\s+as\s+(" + IDENT + ")").match(text, pos)
        if m:
            prefix = prefix + ["as", m.group(1)]
            pos = m.end()
        paths.append(prefix)
    return paths, pos


class Crate:
    def __init__(self, src_dir):
        self.src = src_dir
        self.files = {}  # module path (tuple) -> file
        root = next((f for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src_dir, f))), None)
        if root is None:
            raise SystemExit(f"{src_dir}: neither lib.rs nor main.rs")
        for dp, _, fns in os.walk(src_dir):
            for fn in fns:
                if not fn.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(dp, fn), src_dir).split(os.sep)
                if rel == [root]:
                    mod = ()
                elif rel[-1] == "mod.rs":
                    mod = tuple(rel[:-1])
                else:
                    mod = tuple(rel[:-1]) + (rel[-1][:-3],)
                self.files[mod] = os.path.join(dp, fn)
        self.modules = set(self.files)
        self.refs = []  # (source file module, source inline module, path segments, line)
        self.reexports = {}  # module -> {name: segments relative to that module}
        for mod, path in self.files.items():
            self._read(mod, path)

    def _read(self, file_mod, path):
        text = strip_comments_and_strings(open(path, encoding="utf-8").read())
        # Inline modules: `mod name {` opens one; its path governs `super::` and `self::`.
        scopes = []  # (brace depth at which it closes, module path)
        depth, cur = 0, file_mod
        tokens = re.compile(r"\bmod\s+(" + IDENT + r")\s*\{|[{}]|\b(?:pub(?:\([a-z]+\))?\s+)?use\b|\b(crate|super|self)\s*::")
        pos = 0
        while True:
            m = tokens.search(text, pos)
            if not m:
                break
            line = text.count("\n", 0, m.start()) + 1
            tok = m.group(0)
            if m.group(1):
                depth += 1
                cur = cur + (m.group(1),)
                scopes.append((depth, cur))
                self.modules.add(cur)
                pos = m.end()
            elif tok == "{":
                depth += 1
                pos = m.end()
            elif tok == "}":
                if scopes and scopes[-1][0] == depth:
                    scopes.pop()
                    cur = scopes[-1][1] if scopes else file_mod
                depth -= 1
                pos = m.end()
            elif tok.endswith("use"):
                trees, end = parse_use_tree(text, m.end())
                public = tok.startswith("pub")
                for seg in trees:
                    alias = seg[-1]
                    if len(seg) >= 3 and seg[-2] == "as":
                        seg = seg[:-2]
                    if seg and seg[-1] == "self":
                        seg = seg[:-1]
                        alias = seg[-1] if seg else alias
                    if not seg:
                        continue
                    if seg[0] in ("crate", "super", "self"):
                        self.refs.append((file_mod, cur, seg, line))
                    elif public or True:
                        # `use child::X` in a parent (2018 paths relative to the module).
                        pass
                    if public and seg[-1] != "*":
                        base = seg if seg[0] in ("crate", "super", "self") else ["self"] + seg
                        self.reexports.setdefault(cur, {})[alias] = base
                pos = max(end, m.end())
            else:
                seg, end = parse_use_tree(text, m.start())
                for s in seg:
                    self.refs.append((file_mod, cur, s, line))
                pos = max(end, m.end())

    def resolve(self, here, seg, seen=0):
        """The module a path from module `here` names (its deepest module prefix)."""
        if not seg:
            return here
        mod = here
        i = 0
        if seg[0] == "crate":
            mod, i = (), 1
        while i < len(seg) and seg[i] in ("super", "self"):
            if seg[i] == "super":
                mod = mod[:-1]
            i += 1
        while i < len(seg):
            child = mod + (seg[i],)
            if child in self.modules:
                mod, i = child, i + 1
                continue
            target = self.reexports.get(mod, {}).get(seg[i])
            if target is not None and seen < 16:
                return self.resolve(mod, target + seg[i + 1:], seen + 1)
            break
        return mod

    def file_of(self, mod):
        """The nearest file-backed module at or above `mod` (inline modules live in a file)."""
        while mod not in self.files:
            mod = mod[:-1]
        return mod

    def sibling_edges(self):
        """{parent: {(a, b): (file, line)}}: a reference inside sibling a to sibling b."""
        edges = {}
        for file_mod, here, seg, line in self.refs:
            target = self.file_of(self.resolve(here, seg))
            k = 0
            while k < min(len(file_mod), len(target)) and file_mod[k] == target[k]:
                k += 1
            if k == len(file_mod) or k == len(target):
                continue  # one contains the other: a parent and its own descendants
            parent, a, b = file_mod[:k], file_mod[k], target[k]
            edges.setdefault(parent, {}).setdefault((a, b), (self.files[file_mod], line, "::".join(seg)))
        return edges


def strongly_connected(nodes, succ):
    """Tarjan's algorithm; returns the components with more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(succ.get(v, ())):
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

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def cycles(crate):
    """[(parent, component, [(a, b, where)])] for every cycle among siblings."""
    found = []
    for parent, edges in sorted(crate.sibling_edges().items()):
        succ = {}
        for a, b in edges:
            succ.setdefault(a, set()).add(b)
        nodes = {x for e in edges for x in e}
        for comp in strongly_connected(nodes, succ):
            inner = [(a, b, edges[(a, b)]) for (a, b) in sorted(edges) if a in comp and b in comp]
            found.append((parent, comp, inner))
    return found


def crate_dirs(root):
    base = os.path.join(root, "crates")
    for name in sorted(os.listdir(base)):
        src = os.path.join(base, name, "src")
        if os.path.isdir(src):
            yield name, src


def report(name, found, root):
    for parent, comp, inner in found:
        where = "crate root" if not parent else "::".join(parent)
        print(f"cycle in crate `{name}` among the modules of {where}: {' <-> '.join(comp)}")
        for a, b, (path, line, seg) in inner:
            print(f"    {a} -> {b}: {os.path.relpath(path, root)}:{line} ({seg})")


def check(root):
    bad = 0
    for name, src in crate_dirs(root):
        found = cycles(Crate(src))
        report(name, found, root)
        bad += len(found)
    if bad:
        print(f"\n{bad} module cycle(s). HINT: move what both sides need into a module below both "
              "(or into a lower crate), so that references point one way.")
        return 1
    print("no module cycles in", ", ".join(n for n, _ in crate_dirs(root)))
    return 0


def graph(root, name):
    crate = Crate(os.path.join(root, "crates", name, "src"))
    for parent, edges in sorted(crate.sibling_edges().items()):
        where = "crate" if not parent else "::".join(parent)
        succ = {}
        for a, b in edges:
            succ.setdefault(a, []).append(b)
        for a in sorted(succ):
            print(f"{where}: {a} -> {' '.join(sorted(succ[a]))}")


SELF_TEST = {
    "lib.rs": "pub mod a;\npub mod b;\npub mod c;\npub mod m;\npub use b::Thing;\n",
    # a -> b through a crate-root re-export, used inline; b -> a in a brace group.
    "a.rs": "pub fn f() -> crate::Thing { crate::Thing }\n",
    "b.rs": "use crate::{c, a::f as g};\npub struct Thing;\n// crate::c::nothing in a comment\n",
    # c uses nothing of a or b: no cycle through c. A string mentioning crate::a does not count.
    "c.rs": 'pub const S: &str = "crate::a::f";\n#[cfg(test)]\nmod tests {\n    use super::S;\n}\n',
    # Siblings under m: x -> y inline, y -> x through an inline test module's super::super.
    "m/mod.rs": "mod x;\nmod y;\npub use x::X;\n",
    "m/x.rs": "pub struct X;\npub fn h() { super::y::g(); }\n",
    "m/y.rs": "pub fn g() {}\n#[cfg(test)]\nmod tests {\n    fn t() { let _ = super::super::X; }\n}\n",
}


def self_test():
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "crates", "planted", "src")
        for rel, text in SELF_TEST.items():
            os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
            with open(os.path.join(src, rel), "w") as f:
                f.write(text)
        got = sorted((p, tuple(c)) for p, c, _ in cycles(Crate(src)))
        want = [((), ("a", "b")), (("m",), ("x", "y"))]
        if got != want:
            print(f"self-test failed: found {got}, expected {want}")
            return 1
        # Break both cycles: the checker must then be satisfied.
        with open(os.path.join(src, "b.rs"), "w") as f:
            f.write("use crate::c;\npub struct Thing;\n")
        with open(os.path.join(src, "m", "y.rs"), "w") as f:
            f.write("pub fn g() {}\n")
        got = cycles(Crate(src))
        if got:
            print(f"self-test failed: cycles left after breaking them: {got}")
            return 1
    print("self-test: planted cycles found (crate root a <-> b, m: x <-> y), none once broken")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--self-test"]:
        sys.exit(self_test())
    if args[:1] == ["--graph"] and len(args) == 2:
        graph(ROOT, args[1])
        sys.exit(0)
    if args:
        sys.exit(__doc__)
    sys.exit(check(ROOT))
