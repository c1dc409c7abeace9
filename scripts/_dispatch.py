"""Helpers for commands with sub-subcommands (``dvsa align train ...``): each maps to a module's ``main(argv)``."""
from __future__ import annotations

import importlib
import sys


def dispatch(prog: str, table: dict[str, tuple[str, str]], argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "\n".join([f"usage: dvsa {prog} COMMAND [args...]", "", "commands:"]
                      + [f"  {k:<10} {doc}" for k, (_, doc) in table.items()])
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] not in table:
        print(f"dvsa {prog}: unknown command {argv[0]!r}\n\n{usage}", file=sys.stderr)
        return 2
    return int(importlib.import_module(table[argv[0]][0]).main(argv[1:]) or 0)
