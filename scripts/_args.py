"""The one command-line vocabulary of every ``dvsa`` subcommand (the library never imports this).

    --images      image files and/or folders (every command that takes images)
    --out         the output file or folder
    --checkpoint  a checkpoint file, or a pipeline run folder (``dvsa pipeline --out``): the command's model in it
    --device      cpu | cuda | auto (cuda without CUDA is refused by the parser, before any work)
    --seed        the random seed
    --quiet       no progress bars (`dvsa.data.progress.set_quiet`) and no per-item lines
    --set         STAGE.KEY=VALUE (repeatable): a field of a stage's config dataclass, checked before any work
    --n-images / --limit   how many images (a count, never a path)

Numeric flags are range-checked by their type (`positive_int`, `nonneg_int`, `positive_float`, `nonneg_float`,
`unit_float`): a bad value is an argparse error (exit 2, one line).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

import torch
from dvsa.align import loading
from dvsa.align.snippets import SnippetConfig
from dvsa.data import overrides
from dvsa.data.progress import set_quiet
from dvsa.generate.pipeline.run_files import RUN_FILES, resolve_checkpoint

DEVICE = "cpu"  # the torch device of the commands that have no config dataclass with a device of its own
DEVICES = ("cpu", "cuda", "auto")
BOX_WEIGHT = 0.5  # --box-weight of a --box-scorer given without a run folder's own weight


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``PROG: error: MESSAGE``, exit 2); ``--quiet`` silences progress bars as
    soon as it is parsed; ``--set`` items are checked against their dataclasses (`add_set`) before anything runs
    (ConfigError, exit 2)."""

    set_stages: Mapping[str, type] | None = None

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(sys.argv[1:] if args is None else args, namespace)
        if getattr(ns, "quiet", False):
            set_quiet(True)
        if self.set_stages is not None:
            ns.set_items = list(ns.set)
            ns.set = overrides.parse_set(ns.set_items, self.set_stages)
        return ns


def parser(prog: str, doc: str | None, quiet: str = "no progress bars") -> Parser:
    """A subcommand's parser, with ``--quiet`` (`quiet`: what it silences)."""
    p = Parser(prog=prog, description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--quiet", action="store_true", help=quiet)
    return p


# ---------------------------------------------------------------- value types (range checks)
def _number(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def positive_int(text: str) -> int:
    v = _number(int, text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def nonneg_int(text: str) -> int:
    v = _number(int, text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive_float(text: str) -> float:
    v = _number(float, text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def nonneg_float(text: str) -> float:
    v = _number(float, text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def unit_float(text: str) -> float:
    v = _number(float, text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def positive_ints(text: str) -> tuple[int, ...]:
    """``1,7`` -> (1, 7), each > 0."""
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,7, got {text!r}")
    return tuple(positive_int(t.strip()) for t in items)


def nonneg_floats(text: str) -> tuple[float, ...]:
    """``0.3,1,3`` -> (0.3, 1.0, 3.0), each >= 0 ("" -> ())."""
    return tuple(nonneg_float(t.strip()) for t in text.split(",") if t.strip())


def device(text: str) -> str:
    """cpu | cuda | cuda:N | auto (-> cuda when torch sees a GPU, else cpu); cuda without CUDA is refused."""
    t = text.strip().lower()
    if t == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if t != "cpu" and t != "cuda" and not (t.startswith("cuda:") and t[5:].isdigit()):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DEVICES)}, got {text!r}")
    if t != "cpu" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: torch sees no CUDA GPU on this machine (use cpu or auto)")
    return t


# ---------------------------------------------------------------- shared flags
def add_device_arg(p: argparse.ArgumentParser, default: str = DEVICE, help: str | None = None) -> None:
    p.add_argument("--device", type=device, default=default, metavar="{cpu,cuda,auto}",
                   help=help or f"torch device: cpu, cuda or auto (default {default})")


def add_seed_arg(p: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    p.add_argument("--seed", type=int, default=default,
                   help=help or ("random seed (default: the config's)" if default is None else f"random seed "
                                                                                             f"(default {default})"))


def add_set_arg(p: Parser, stages: Mapping[str, type], example: str) -> None:
    """``--set STAGE.KEY=VALUE`` (repeatable) for the stage dataclasses `stages` ({stage: dataclass}; "" takes a
    key without a stage); parsed and checked by `Parser.parse_args` into {stage: {field: value}}."""
    p.set_stages = stages
    named = ", ".join(f"{s} ({c.__name__})" for s, c in stages.items() if s)
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help=f"override a stage setting (repeatable), e.g. {example}; stages: {named}")


def add_checkpoint_arg(p: argparse.ArgumentParser, role: str, required: bool = True, flag: str = "--checkpoint",
                       help: str | None = None) -> None:
    what = help or "checkpoint file"
    p.add_argument(flag, required=required, default=None,
                   help=f"{what}, or a pipeline run folder (uses its {RUN_FILES[role]})")


def add_images_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--images", nargs="+", required=required, metavar="PATH", help="image files and/or folders")


def add_data_args(p: argparse.ArgumentParser, split: str, split_help: str | None = None,
                  dataset_arg: bool = True, limit: bool = False) -> None:
    """--store --dataset --root [--dataset-arg] --split [--limit]: the feature store and records a command reads."""
    p.add_argument("--store", required=True, help="feature store folder (dvsa features) holding the split's images")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (flickr8k, coco, synthetic, ...)")
    p.add_argument("--root", required=True, help="dataset root folder")
    if dataset_arg:
        p.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="reader keyword, e.g. entities=PATH for flickr8k")
    p.add_argument("--split", default=split, help=split_help or f"split to process (default {split})")
    if limit:
        p.add_argument("--limit", type=positive_int, default=None, help="only the first N images of the split")


def add_checkpoint_data_args(p: argparse.ArgumentParser, split: str, split_help: str) -> None:
    """--checkpoint --store --dataset --root --dataset-arg --split of the retrieval commands."""
    add_checkpoint_arg(p, "align", help="alignment checkpoint (dvsa align train: OUT/model.pt)")
    add_data_args(p, split, split_help)


def add_model_args(p: argparse.ArgumentParser, split: str) -> None:
    """The aligner + data flags of align snippets / evaluate / show (`align.loading.open_inputs`)."""
    add_checkpoint_arg(p, "align", help="alignment checkpoint (dvsa align train)")
    add_data_args(p, split, dataset_arg=False, limit=True)
    add_device_arg(p, SnippetConfig.device, help="torch device for scoring: cpu, cuda or auto")
    add_checkpoint_arg(p, "box_score", required=False, flag="--box-scorer",
                       help="a learned box score (dvsa align boxscore): WEIGHT x its score of a region is added "
                            "to every word's score for that region")
    p.add_argument("--box-weight", type=float, default=BOX_WEIGHT,
                   help=f"WEIGHT of --box-scorer (default {BOX_WEIGHT:g})")


def open_inputs(args):
    """`align.loading.open_inputs` of the `add_model_args` flags (checkpoints resolved: file or run folder)."""
    scorer = resolve_checkpoint(args.box_scorer, "box_score") if getattr(args, "box_scorer", None) else None
    return loading.open_inputs(str(resolve_checkpoint(args.checkpoint, "align")), args.store, args.dataset,
                               args.root, args.split, args.limit, args.device, scorer and str(scorer),
                               args.box_weight)


def add_beta_args(p: argparse.ArgumentParser, target_len: float | None = SnippetConfig.target_len,
                  target_help: str = "") -> None:
    """The beta flags that `resolve_beta` reads: --beta | --beta-from | --target-len (one of them); `target_len`
    is --target-len's default (None: the command decides, `target_help` says how)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta", type=nonneg_float, default=None, help="fixed beta of eq. 12 (>= 0)")
    g.add_argument("--beta-from", default=None, help="a snippets summary JSON (dvsa align snippets) holding beta")
    g.add_argument("--target-len", type=positive_float, default=target_len,
                   help="calibrate beta to this mean snippet length on the train split" + target_help)


def resolve_beta(args, model, vocab, store, all_records) -> tuple[float, str]:
    """`align.loading.resolve_beta` of the `add_beta_args` flags."""
    return loading.resolve_beta(model, vocab, store, all_records, args.split, args.beta, args.beta_from, args.target_len,
                   args.device)
