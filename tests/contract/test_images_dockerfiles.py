"""The Dockerfiles, checked without a Docker engine (there is none here).

Each image is built from the repository root: every COPY source must exist and survive
.dockerignore, the entry point must be a console script pyproject.toml declares, the final user
must be a numeric non-root UID, the base must be pinned, and each image installs only its extra.
Finally the distribution is built from exactly the files the image copies (pip wheel, offline),
so a missing COPY line shows up here rather than in CI's image build.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGES = {
    "operator": {"extra": "operator", "entrypoint": "sail", "package": "sail_operator", "absent": "sail_trainer"},
    "trainer": {"extra": "train", "entrypoint": "sail-trainer", "package": "sail_trainer", "absent": "sail_operator"},
}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Build-context paths of every COPY/ADD that does not copy from another stage."""
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = shlex.split(instruction.arguments)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += words[:-1]
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**/` any folders, `*` and `?` within one path element."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _pattern_regex(raw.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def load_dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def dockerfile(image: str) -> list[Instruction]:
    return parse_dockerfile(REPO / "images" / image / "Dockerfile")


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!api/", "!README.md", "**/__pycache__"]
    assert dockerignore_excludes(".venv/bin/python", patterns)
    assert not dockerignore_excludes("api/sail_api/spec.py", patterns)
    assert dockerignore_excludes("api/sail_api/__pycache__/spec.pyc", patterns)
    assert not dockerignore_excludes("README.md", patterns)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_copy_sources_exist_and_are_in_the_build_context(image: str) -> None:
    sources = copy_sources(dockerfile(image))
    assert "pyproject.toml" in sources
    ignore = load_dockerignore()
    for source in sources:
        assert (REPO / source).exists(), f"images/{image}/Dockerfile copies {source}, which does not exist"
        assert not dockerignore_excludes(source, ignore), f"{source} is excluded by .dockerignore"
    for heavy in (".venv", ".git", "tests", "bench", "runs/x", ".sail/x"):
        assert dockerignore_excludes(heavy, ignore), f".dockerignore must keep {heavy} out of the context"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_entrypoint_is_a_declared_console_script(image: str) -> None:
    (entrypoint,) = [i for i in dockerfile(image) if i.keyword == "ENTRYPOINT"]
    command = json.loads(entrypoint.arguments)  # exec form: no shell between the kubelet and Python
    assert command == [IMAGES[image]["entrypoint"]]
    module = console_scripts()[command[0]].split(":")[0]
    assert module.split(".")[0] == IMAGES[image]["package"]


def test_operator_image_defaults_to_the_operator_command_the_chart_passes() -> None:
    (cmd,) = [i for i in dockerfile("operator") if i.keyword == "CMD"]
    assert json.loads(cmd.arguments) == ["operator"]
    chart_values = yaml.safe_load((REPO / "charts" / "sail-operator" / "values.yaml").read_text())
    (expose,) = [i for i in dockerfile("operator") if i.keyword == "EXPOSE"]
    assert expose.arguments.split() == [str(chart_values["metrics"]["port"]), str(chart_values["liveness"]["port"])]
    assert chart_values["securityContext"]["runAsUser"] == 65532


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_final_user_is_numeric_and_not_root(image: str) -> None:
    instructions = dockerfile(image)
    last_stage = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    users = [ins.arguments for ins in instructions[last_stage:] if ins.keyword == "USER"]
    assert users, f"images/{image}: the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]
    after_user = instructions[instructions.index(next(i for i in instructions[last_stage:] if i.keyword == "USER")):]
    assert not any(i.keyword == "RUN" for i in after_user), "no RUN after dropping root: keep USER last"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_base_image_is_pinned(image: str) -> None:
    instructions = dockerfile(image)
    args = dict(re.match(r"(\w+)=(\S+)", i.arguments).groups() for i in instructions if i.keyword == "ARG" and "=" in i.arguments)
    for base in (i.arguments.split()[0] for i in instructions if i.keyword == "FROM"):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        name, _, tag = resolved.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{image}: unpinned base {resolved}"
    text = (REPO / "images" / image / "Dockerfile").read_text()
    assert "@sha256:" in text, f"{image}: document the digest pin for release builds"
    if image == "operator":
        assert re.search(r"python:3\.11\.\d+-slim", text)
    else:
        torch_pin = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                         ["optional-dependencies"]["train"] if d.startswith("torch=="))
        assert f"pytorch/pytorch:{torch_pin.removeprefix('torch==')}-cuda" in text, "base torch must match the pin"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_only_its_extra(image: str) -> None:
    runs = " ".join(i.arguments for i in dockerfile(image) if i.keyword == "RUN")
    extras = set(re.findall(r"\.\[([\w,]+)\]", runs))
    assert extras == {IMAGES[image]["extra"]}
    assert "torch" not in runs.replace("import torch", "") or image == "trainer"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to list the tracked files")
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_distribution_builds_from_exactly_the_copied_files(image: str, tmp_path: Path) -> None:
    """pip wheel on a copy of the COPY sources (tracked files only): the image's install step works."""
    context = tmp_path / "context"
    tracked = subprocess.run(["git", "ls-files", "-z", "--", *copy_sources(dockerfile(image))], cwd=REPO,
                             capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, check=False, timeout=180, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert any(n.startswith(IMAGES[image]["package"] + "/") for n in names)
    assert any(n.startswith("sail_api/") for n in names)
    assert not any(n.startswith(IMAGES[image]["absent"] + "/") for n in names)
    assert f"{IMAGES[image]['entrypoint']} = " in entry_points
