"""docs/configuration.md's tables, from the config dataclasses themselves (their fields, defaults and comments).

    python -m dvsa.data.config_docs docs/configuration.md    # rewrite the tables in place
    python -m dvsa.data.config_docs --check docs/configuration.md   # exit 1 when a table is out of date

Each ``### ClassName (`module`)`` section of the page holds one table, ``| field | default | meaning |``: a row
per dataclass field, its default as JSON (None -> null, tuples -> lists) and its meaning: the comment at the end
of the field's line, followed in parentheses by the comment block just above the field when there is one (only
the block when the line has no comment). The prose around the tables is left as it is. tests/test_docs.py
checks that the page matches the code.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import io
import json
import re
import sys
import tokenize
from pathlib import Path

from dvsa.data.io import atomic_write_text

SECTION = re.compile(r"^### (\w+) \(`([\w.]+)`\)\s*$")
HEAD = "| field | default | meaning |"


def _comments(cls: type) -> dict[str, tuple[str, str]]:
    """{field: (comment on its line, comment block above it)} from the class's source."""
    src = inspect.getsource(cls)
    lines = src.splitlines()
    line_comment: dict[int, str] = {}
    statement_end: dict[int, int] = {}  # first line of a logical line -> its last line
    first = None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            line_comment[tok.start[0]] = tok.string[1:].strip()
        elif tok.type == tokenize.NEWLINE:
            statement_end[first if first is not None else tok.start[0]] = tok.start[0]
            first = None
        elif first is None and tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
            first = tok.start[0]
    out = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for n, text in enumerate(lines, start=1):
        m = re.match(r"\s+(\w+)\s*:", text)
        if not m or m.group(1) not in names or m.group(1) in out:
            continue
        end = statement_end.get(n, n)
        inline = [line_comment.get(j, "") for j in range(n, end + 1)]
        k = end + 1  # continuation lines of the line's comment: "#" followed by two or more spaces
        while k <= len(lines) and re.match(r"\s*#\s{2,}\S", lines[k - 1]):
            inline.append(lines[k - 1].strip()[1:].strip())
            k += 1
        block, k = [], n - 1
        while k >= 1 and lines[k - 1].lstrip().startswith("#"):
            block.insert(0, lines[k - 1])
            k -= 1
        block = [b.strip()[1:].strip() for b in block if not re.match(r"\s*#\s{2,}\S", b)]
        block = [b for b in block if not b.startswith("---")]
        out[m.group(1)] = (" ".join(x for x in inline if x), " ".join(block))
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_rows(cls: type) -> list[str]:
    """The markdown table (header and rows) of a config dataclass."""
    comments = _comments(cls)
    rows = [HEAD, "| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        inline, block = comments.get(f.name, ("", ""))
        meaning = f"{inline} ({block})" if inline and block else inline or block
        default = json.dumps(_default(f))
        rows.append(f"| `{f.name}` | `{_cell(default)}` | {_cell(meaning)} |")
    return rows


def render(page: str) -> str:
    """`page` with every section's table regenerated from its dataclass."""
    lines, out, i = page.splitlines(), [], 0
    while i < len(lines):
        out.append(lines[i])
        m = SECTION.match(lines[i])
        i += 1
        if not m:
            continue
        cls = getattr(importlib.import_module(f"dvsa.{m.group(2).removeprefix('dvsa.')}"), m.group(1))
        while i < len(lines) and lines[i] != HEAD:  # the prose before the table
            out.append(lines[i])
            i += 1
        while i < len(lines) and lines[i].startswith("|"):  # the old table
            i += 1
        out += table_rows(cls)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dvsa.data.config_docs", description=__doc__.splitlines()[0])
    p.add_argument("page", type=Path)
    p.add_argument("--check", action="store_true", help="only check; exit 1 when the page is out of date")
    args = p.parse_args(argv)
    old = args.page.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{args.page}: tables out of date; run python -m dvsa.data.config_docs {args.page}", file=sys.stderr)
            return 1
        return 0
    atomic_write_text(args.page, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
