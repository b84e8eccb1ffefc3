#!/usr/bin/env python3
"""List the functions longer than a limit (default 60 lines) in the project's packages.

Usage: .venv/bin/python scripts/function_lengths.py [--limit 60] [--check] [DIR ...]
(default DIRs: api operator trainer). A function's length counts from its `def` line to its
last line, docstring and comments included (what a reader has to hold in mind). A long
function whose reason is written down carries a comment `# function-length: <why>` on its
`def` line or on the line above; it is listed with that reason and does not fail `--check`.
Uses only the standard library (ast), so it runs without the project's environment.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIRS = ("api", "operator", "trainer")
MARKER = "# function-length:"


@dataclass(frozen=True)
class LongFunction:
    path: Path
    line: int
    name: str
    length: int
    reason: str | None


def find_reason(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The text after `# function-length:` on the def line or the line above it, if any."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    for number in (first - 1, node.lineno):
        if 1 <= number <= len(lines) and MARKER in lines[number - 1]:
            return lines[number - 1].split(MARKER, 1)[1].strip() or "(no reason given)"
    return None


def scan_file(path: Path, limit: int) -> Iterator[LongFunction]:
    """Every function or method (nested ones too) in `path` longer than `limit` lines."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    stack: list[tuple[ast.AST, str]] = [(ast.parse(text, filename=str(path)), "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    yield LongFunction(path, child.lineno, name[:-1], length, find_reason(lines, child))
            stack.append((child, name))


def scan(dirs: list[Path], limit: int) -> list[LongFunction]:
    """Long functions of every .py file under `dirs`, longest first."""
    found = [f for d in dirs for p in sorted(d.rglob("*.py")) if ".venv" not in p.parts for f in scan_file(p, limit)]
    return sorted(found, key=lambda f: (-f.length, str(f.path), f.line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="folders to scan (default: api operator trainer)")
    parser.add_argument("--limit", type=int, default=60, help="longest allowed function, in lines (default 60)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a long function has no reason comment")
    args = parser.parse_args(argv)
    dirs = args.dirs or [REPO / d for d in DEFAULT_DIRS]
    found = scan(dirs, args.limit)
    for f in found:
        where = f.path.resolve().relative_to(REPO) if f.path.resolve().is_relative_to(REPO) else f.path
        note = f"  (allowed: {f.reason})" if f.reason else ""
        print(f"{f.length:4d}  {where}:{f.line}  {f.name}{note}")  # noqa: T201  (CLI output)
    unexplained = [f for f in found if f.reason is None]
    print(f"{len(found)} functions longer than {args.limit} lines, {len(unexplained)} without a reason comment")  # noqa: T201
    return 1 if args.check and unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
