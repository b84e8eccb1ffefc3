"""The repository's docs stand alone: no link or reference to a file outside it (issue 19 item 8).

A clone holds only this repository, so a link into the shared folder beside it (or to a document
that lives only there) is dead in every clone. Two checks over every text file:
- no path that leaves the repository for the shared folder, and no name of a document that
  exists only outside it (the method is docs/method.md);
- every relative Markdown link resolves to a file or folder inside the repository.
docs/dev/ is left out: it is the founding team's notes about their workspace, not product docs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".hypothesis", ".import_linter_cache", "node_modules", "__pycache__", ".sail", ".pytest_cache", ".ruff_cache", "build", "dist"}
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".txt", ".toml", ".json", ".tpl", ".sh", ".cfg", ".ini", ".html"}
LEFT_OUT = ("docs/dev/",)
# Built from parts so that this file does not match itself.
OUTSIDE = re.compile("|".join([
    r"\.\./shared\b", "/work/" + "shared", "SAIL-" + "METHOD", r"\bDESIGN" + r"\.md", r"\bTESTING" + r"\.md",
    "HOUSE-" + "STYLE",
]))
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def text_files() -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(ROOT).as_posix()
            if (path.suffix in TEXT_SUFFIXES or name == "Dockerfile") and not rel.startswith(LEFT_OUT) \
                    and path.stat().st_size < 2_000_000:
                out.append(path)
    return out


def test_no_file_refers_to_a_file_outside_the_repository():
    hits = []
    for path in text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "references to files outside the repository (use docs/method.md or a doc in docs/):\n" + \
        "\n".join(hits)


def test_every_relative_markdown_link_resolves_inside_the_repository():
    dead = []
    for path in text_files():
        if path.suffix != ".md":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for target in MD_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue  # a URL (https:, mailto:) or an anchor of this page
                resolved = (path.parent / target.split("#", 1)[0]).resolve()
                if not resolved.is_relative_to(ROOT) or not resolved.exists():
                    dead.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not dead, "Markdown links to files that are not in the repository:\n" + "\n".join(dead)


def test_the_checks_see_the_docs_and_would_catch_a_shared_link(tmp_path):
    assert ROOT / "docs" / "method.md" in text_files()
    assert OUTSIDE.search("see [the method](../" + "shared/docs/x.md)")
    assert MD_LINK.findall("[method](docs/method.md) and [x](https://e.org)") == ["docs/method.md", "https://e.org"]
