"""The `dvsa` command: ``dvsa SUBCOMMAND [args...]``. Each subcommand is a module with ``main(argv) -> int``."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "synth": ("dvsa.scripts.synth", "write the synthetic scenes (Karpathy JSON + ground-truth sidecar)"),
    "vectors": ("dvsa.scripts.vectors", "load or train word vectors for a vocabulary and report coverage"),
    "features": ("dvsa.scripts.features", "detect regions and compute CNN features into a feature store"),
    "align": ("dvsa.scripts.align", "stage 1: train | eval | snippets | evaluate | show"),
    "retrieve": ("dvsa.scripts.retrieve", "sentence -> top images, image -> top sentences"),
    "generate": ("dvsa.scripts.generate", "stage 2: train | eval"),
    "caption": ("dvsa.scripts.caption", "full-frame captions for images"),
    "dense": ("dvsa.scripts.dense", "dense region captions for images"),
    "pipeline": ("dvsa.scripts.pipeline", "the whole two-stage system, cached and resumable"),
    "demo": ("dvsa.scripts.demo", "the pipeline on the embedded synthetic scenes"),
    "bench": ("dvsa.scripts.bench", "benchmarks that print a table"),
    "report": ("dvsa.scripts.report", "rebuild the HTML report of a pipeline run folder"),
}


def _usage() -> str:
    lines = ["usage: dvsa COMMAND [args...]", "", "commands:"]
    lines += [f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dvsa: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
