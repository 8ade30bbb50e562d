#!/usr/bin/env python3
"""Lists import circles among the crate's modules: every file under src/ is a
module; an edge goes from a file to each module it names through `crate::`,
`super::`, `self::` or a child path (`child::x` of a module it declares),
in `use` lines, re-exports and paths in code alike. Comments and strings are
ignored. Prints each circle (a strongly connected set of two or more files)
and `N circle(s)`; exits 1 when there is one."""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


files = {module_of(p): p for p in sorted(src.rglob("*.rs")) if p.name != "main.rs" or p.parent != src}
PATH = re.compile(r"\b(crate|super|self|[a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)


def strip(text: str) -> str:
    """The code without comments, string and char literals (one pass, as a lexer would)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif re.match(r'(?:b?r)(#*)"', text[i:i + 40]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'(?:b?r)(#*)"', text[i:])
            close = '"' + m.group(1)
            end = text.find(close, i + m.end())
            i = n if end < 0 else end + len(close)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(?:\\.|[^'\\])'", text[i:i + 12]):
            m = re.match(r"'(?:\\u\{[0-9a-fA-F]+\}|\\.|[^'\\])'", text[i:i + 12])
            i += m.end() if m else 3
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def target(base: tuple, segments: list) -> tuple:
    """The deepest module file named by `base` + `segments`."""
    best = None
    for n in range(len(segments) + 1):
        candidate = base + tuple(segments[:n])
        if candidate in files:
            best = candidate
    return best


edges = {m: set() for m in files}
for module, path in files.items():
    text = strip(path.read_text())
    # `mod tests` and other inline test modules name their parent: not an import.
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests", text)[0]
    children = {m[-1] for m in files if len(m) == len(module) + 1 and m[: len(module)] == module}
    names = []
    for group in USE_GROUP.finditer(text):
        for item in re.split(r",", group.group(2)):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self" and not item.startswith("{"):
                names.append(group.group(1) + "::" + item.replace("{", "").replace("}", ""))
    names += [m.group(0) for m in PATH.finditer(text)]
    for name in names:
        segments = name.split("::")
        head, rest = segments[0], segments[1:]
        if head == "crate":
            base = ()
        elif head == "super":
            base = module[:-1]
            while rest and rest[0] == "super":
                rest, base = rest[1:], base[:-1]
        elif head == "self":
            base = module
        elif head in children:
            base, rest = module, segments
        else:
            continue
        found = target(base, rest)
        if found is not None and found != module and found != ():
            edges[module].add(found)

index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]


def connect(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            connect(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            circles.append(component)


sys.setrecursionlimit(10000)
for v in files:
    if v not in index:
        connect(v)
for i, circle in enumerate(circles, 1):
    print(f"circle {i}: {len(circle)} files: " + ", ".join(sorted(str(files[m]) for m in circle)))
print(f"{len(circles)} circle(s) among {len(files)} modules")
sys.exit(1 if circles else 0)
