"""The `dvsa` command: ``dvsa [--debug] SUBCOMMAND [args...]``. Each subcommand is a module with
``main(argv) -> int``; user-facing faults are caught here, once (see `main`)."""
from __future__ import annotations

import importlib
import sys

from dvsa.data.errors import DvsaError

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
    "serve": ("dvsa.scripts.serve", "local web app: captions, dense captions, alignments, photo search"),
    "index": ("dvsa.scripts.index", "make a photo folder searchable (regions once, FAISS + eq. 8 rerank)"),
}


def _usage() -> str:
    lines = ["usage: dvsa COMMAND [args...]", "", "commands:"]
    lines += [f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A user-facing fault (`DvsaError`: bad data, checkpoint, output, flag or override) or
    an OS error on a file ends in one line on stderr and its exit code (1, or 2 for usage); ``--debug`` before
    the command shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[:1]
    if debug:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dvsa: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        if rest and rest[0] in getattr(module, "TABLE", {}):  # dvsa align train ...: name it so in the message
            name = f"{name} {rest[0]}"
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"dvsa {name}: interrupted (run the same command again to resume where it can)", file=sys.stderr)
        return 130
    except DvsaError as e:
        if debug:
            raise
        print(f"dvsa {name}: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a file the command reads or writes: the message names it
        if debug:
            raise
        print(f"dvsa {name}: {one_line(e)}", file=sys.stderr)
        return 1


def one_line(e: BaseException) -> str:
    """The exception's message on one line (an OSError as "path: reason")."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
