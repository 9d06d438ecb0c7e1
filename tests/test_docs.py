"""The README and docs/ (issue 38): every relative link resolves, every command in the README's
code blocks is a real command, target, notebook or file, and the README stays short.

The checkers are plain functions so that the last tests can show each of them failing on a bad
link or command (a check that cannot fail checks nothing)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from geofm_lib.cli import COMMANDS
from geofm_lib.config import FIELDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 260

# programs a recipe may use besides make, geofm, python, torchrun, papermill and bash scripts
ALLOWED_PROGRAMS = {"cd", "conda", "dask", "export", "git", "jupyter", "mamba", "pip", "pytest",
                    "ruff", "source", "uv"}
ALLOWED_PYTHON_MODULES = {"pip", "pytest", "ipykernel", "geofm_lib.cli"}
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
REPO_DIRS = ("parameters/", "notebooks/", "tools/", "tests/", "docs/", ".ci/", "geofm_lib/")
PLACEHOLDER = re.compile(r"[<>*{}$]|HOST|PATH|FILE")

FENCE = re.compile(r"^ *(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^ *\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+).*?\1", re.S)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


# --- links -----------------------------------------------------------------------------------

def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are examples)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def broken_links(path: Path) -> list[str]:
    """Each relative link of a Markdown file whose file (or heading anchor) does not exist."""
    bad = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http(s), mailto, ...
        file_part, _, anchor = target.partition("#")
        if not file_part:
            continue  # a pure #anchor
        dest = (path.parent / file_part).resolve()
        if not dest.exists():
            bad.append(f"{_rel(path)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{_rel(path)}: {target} (no heading #{anchor} in {_rel(dest)})")
    return bad


# --- commands ---------------------------------------------------------------------------------

def shell_lines(text: str) -> list[str]:
    """The command lines of a Markdown text's shell code blocks, continuations joined."""
    lines = []
    for _, lang, body in FENCE.findall(text):
        if lang.lower() not in SHELL_BLOCKS:
            continue
        body = re.sub(r"\\\n\s*", " ", body)
        lines += [ln.strip() for ln in body.splitlines() if ln.strip()
                  and not ln.strip().startswith("#")]
    return lines


def _segments(line: str) -> list[list[str]]:
    """The simple commands of a line (split at ;, &&, ||, |), comments dropped."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    segments, current = [], []
    for tok in lex:
        if tok in {";", "&&", "||", "|", "&"}:
            segments.append(current)
            current = []
        else:
            current.append(tok)
    segments.append(current)
    return [s for s in segments if s]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {t for line in re.findall(r"^([A-Za-z0-9_.-][^:=\n]*):(?!=)", text, re.M)
            for t in line.split() if not t.startswith(".")}


def _check_paths(args: list[str]) -> list[str]:
    """Files of the repository named as arguments exist; parameter sets and presets exist."""
    bad = []
    for i, arg in enumerate(args):
        prev = args[i - 1] if i else ""
        if PLACEHOLDER.search(arg):
            continue
        if arg.startswith(REPO_DIRS) and not (ROOT / arg).exists():
            bad.append(f"{arg}: no such file in the repository")
        elif prev == "--preset" and not (ROOT / "parameters" / f"{arg}.yaml").is_file():
            bad.append(f"--preset {arg}: no parameters/{arg}.yaml")
        elif (prev in ("--experiment", "--params") and "/" not in arg
              and not arg.endswith(".yaml")
              and not (ROOT / "parameters" / f"{arg}.yaml").is_file()):
            bad.append(f"{prev} {arg}: no parameters/{arg}.yaml")
        elif prev == "--notebooks":
            for prefix in arg.split(","):
                if not list((ROOT / "notebooks").glob(f"{prefix}*.ipynb")):
                    bad.append(f"--notebooks {arg}: no notebook starts with {prefix}")
    return bad


def _check_geofm(args: list[str], where: str) -> list[str]:
    if not args or args[0] not in COMMANDS:
        return [f"{where}: {args[0] if args else '(none)'} is not a geofm command "
                f"({', '.join(COMMANDS)})"]
    bad = []
    for i, arg in enumerate(args[:-1]):
        if arg in ("-p", "--param"):
            key = args[i + 1].split("=", 1)[0]
            if key not in FIELDS:
                bad.append(f"{where}: -p {key} is not a workspace parameter")
    return bad


def check_command(segment: list[str], targets: set[str]) -> list[str]:
    """What is wrong with one simple command of the README's recipes (empty: nothing)."""
    words = list(segment)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)  # VAR=value prefixes
    if not words:
        return []
    program, args = words[0], words[1:]
    line = " ".join(segment)
    if program.startswith(".venv/bin/"):
        program = program.removeprefix(".venv/bin/")
    bad = _check_paths(args)
    if program == "make":
        bad += [f"{line}: make has no target {t!r}" for t in args
                if not t.startswith("-") and "=" not in t and t not in targets]
    elif program == "geofm":
        bad += _check_geofm(args, line)
    elif program in ("python", "python3", "torchrun"):
        if "-m" not in args:
            if program == "torchrun" or not args or not (ROOT / args[0]).is_file():
                bad.append(f"{line}: runs no module of an allowed kind and no script here")
        else:
            module = args[args.index("-m") + 1] if args.index("-m") + 1 < len(args) else ""
            rest = args[args.index("-m") + 2:]
            if module not in ALLOWED_PYTHON_MODULES:
                bad.append(f"{line}: module {module!r} is not one of "
                           f"{sorted(ALLOWED_PYTHON_MODULES)}")
            elif module == "geofm_lib.cli":
                bad += _check_geofm(rest, line)
    elif program == "papermill":
        positional = [a for a in args if not a.startswith("-")]
        if not positional or not positional[0].startswith("notebooks/") \
                or not (ROOT / positional[0]).is_file():
            bad.append(f"{line}: the notebook {positional[:1]} does not exist")
    elif program in ("bash", "sh"):
        if not args or not (ROOT / args[0]).is_file():
            bad.append(f"{line}: no script {args[:1]} in the repository")
    elif program not in ALLOWED_PROGRAMS:
        bad.append(f"{line}: {program!r} is neither a project command nor allowed "
                   f"({sorted(ALLOWED_PROGRAMS)})")
    return bad


def bad_commands(text: str) -> list[str]:
    targets = make_targets()
    return [problem for line in shell_lines(text) for segment in _segments(line)
            for problem in check_command(segment, targets)]


# --- the tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_docs_pages_exist_and_are_indexed():
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert {"data.md", "bands.md", "training.md", "ssl.md", "segmentation.md", "benchmarks.md",
            "architecture.md", "parameters.md"} <= pages
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    assert [p for p in sorted(pages) if f"]({p})" not in index] == []


def test_every_command_in_the_readme_is_real():
    text = README.read_text(encoding="utf-8")
    assert bad_commands(text) == []
    programs = {seg[0] for line in shell_lines(text) for seg in _segments(line)}
    # the checks above saw the recipes: the kinds of commands the README promises are there
    assert {"make", "geofm", "papermill", "torchrun"} <= programs


def test_readme_keeps_the_test_command_and_stays_short():
    text = README.read_text(encoding="utf-8")
    # CI (.ci/run) runs the README's test command: `make test`
    assert ["make", "test"] in [seg for ln in shell_lines(text) for seg in _segments(ln)]
    assert len(text.splitlines()) <= MAX_README_LINES


def test_the_checkers_fail_on_bad_links_and_commands(tmp_path):
    """Each check reports a made-up fault (so the tests above can fail)."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](page.md) [anchor](page.md#title) [web](https://x.org/a)\n"
                    "[gone](missing.md) [bad anchor](page.md#nowhere) `[code](nope.md)`\n")
    found = broken_links(page)
    assert len(found) == 2 and "missing.md" in found[0] and "#nowhere" in found[1]
    fence = "```bash\n{}\n```\n"
    good = ["make report", "geofm data --preset demo -p group C",
            "torchrun --nproc_per_node 8 -m geofm_lib.cli train --preset full --experiment group_C",
            "papermill notebooks/03_pretrain.ipynb out.ipynb -p group C",
            "HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_docs.py"]
    assert bad_commands(fence.format("\n".join(good))) == []
    for wrong in ["make no-such-target", "geofm no-such-command", "geofm data -p no_such_key=1",
                  "torchrun --nproc_per_node 8 -m geofm_lib.cli nope --preset full",
                  "papermill notebooks/99_missing.ipynb out.ipynb",
                  "geofm report --experiment no_such_set", "geofm data --preset huge",
                  "geofm report --notebooks 42", "bash tools/no_such.sh",
                  "frobnicate --all", "cd /tmp && rm -rf work"]:
        assert bad_commands(fence.format(wrong)), wrong
    assert bad_commands("```yaml\nfrobnicate: 1\n```\n") == []  # only shell blocks are commands
