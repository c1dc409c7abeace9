"""Every ``dvsa ...`` command line shown in README.md (code blocks, tables, text) and docs/experiments.md names a
real subcommand, and every flag on it is one that subcommand's parser has (its --help lists it)."""
import functools
import importlib
import re
import shlex
from pathlib import Path

import pytest
from dvsa.scripts import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "experiments.md"]


def command_lines(text: str) -> list[str]:
    """The ``dvsa ...`` commands of a markdown text: lines of non-Python fenced blocks (``\\`` continuations
    joined, ``# comments`` dropped) and inline code spans starting with ``dvsa `` (which may wrap lines)."""
    out = []
    fenced = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
    for lang, body in fenced.findall(text):
        if lang == "python":
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line.startswith("dvsa "):
                out.append(line)
    rest = fenced.sub("", text)
    for span in re.findall(r"`([^`]+)`", rest):
        span = " ".join(span.split())
        if span.startswith("dvsa "):
            out.append(span)
    return out


def _commands() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in command_lines(doc.read_text())]


@functools.lru_cache(maxsize=None)
def help_text(module: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    return buf.getvalue()


def resolve(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(modules the command line names, its flags) of ``dvsa CMD [SUB [/ SUB ...]] ARGS``."""
    name = tokens[1]
    assert name in cli.COMMANDS, f"no command {name!r}"
    module = cli.COMMANDS[name][0]
    table = getattr(importlib.import_module(module), "TABLE", None)
    rest = tokens[2:]
    if table is not None:
        subs = []
        while rest and not rest[0].startswith("-"):
            if rest[0] != "/":
                assert rest[0] in table, f"no command 'dvsa {name} {rest[0]}'"
                subs.append(table[rest[0]][0])
            rest = rest[1:]
        modules = subs
    elif name == "retrieve" and "--index" in rest:  # photo search over an index: its own parser
        modules = ["dvsa.scripts.search"]
    else:
        modules = [module]
    flags = [t.split("=", 1)[0] for t in rest if t.startswith("--")]
    return modules, flags


@pytest.mark.parametrize("doc, line", _commands())
def test_documented_command_line_is_accepted(doc, line):
    tokens = [t.strip("[]") for t in shlex.split(line.replace("...", " "))]
    tokens = [t for t in tokens if t]
    if len(tokens) < 2 or not re.fullmatch(r"[a-z]+", tokens[1]):
        pytest.skip(f"not a concrete command: {line}")  # dvsa COMMAND ..., dvsa --help
    modules, flags = resolve(tokens)
    assert modules, line
    for module in modules:
        text = help_text(module)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{doc}: {flag} of {line!r}"


def test_the_docs_show_commands():
    lines = [line for _, line in _commands()]
    assert len(lines) >= 20 and any("--set" in line for line in lines)
    assert not any(re.search(r"--config\s+\w+\.\w+=", line) for line in lines)  # the old key=value spelling
