"""Argument blocks shared by several commands (the library never imports this)."""
from __future__ import annotations

import argparse

from dvsa.align import loading
from dvsa.align.snippets import SnippetConfig

DEVICE = "cpu"  # the torch device of the commands that have no config dataclass with a device of its own


def add_device_arg(p: argparse.ArgumentParser, default: str = DEVICE, help: str | None = None) -> None:
    p.add_argument("--device", default=default, help=help)


def add_checkpoint_data_args(p: argparse.ArgumentParser, split: str, split_help: str) -> None:
    """--checkpoint --store --dataset --root --dataset-arg --split --device of the retrieval commands."""
    p.add_argument("--checkpoint", required=True, help="model.pt from dvsa align train")
    p.add_argument("--store", required=True, help="feature store folder holding the split's images")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog")
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE", help="reader keyword")
    p.add_argument("--split", default=split, help=split_help)


def add_model_args(p: argparse.ArgumentParser, split: str) -> None:
    """The aligner + data flags of align snippets / evaluate / show (`align.loading.open_inputs`)."""
    p.add_argument("--checkpoint", required=True, help="alignment checkpoint (dvsa align train)")
    p.add_argument("--store", required=True, help="feature store folder (dvsa features)")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (flickr8k, synthetic, ...)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default=split, help=f"split to process (default {split})")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    p.add_argument("--device", default=SnippetConfig.device, help="torch device for scoring (cpu, cuda)")
    p.add_argument("--box-scorer", default=None,
                   help="a learned box score (dvsa align boxscore): WEIGHT x its score of a region is added to "
                        "every word's score for that region")
    p.add_argument("--box-weight", type=float, default=0.5, help="WEIGHT of --box-scorer (default 0.5)")


def open_inputs(args):
    """`align.loading.open_inputs` of the `add_model_args` flags."""
    return loading.open_inputs(args.checkpoint, args.store, args.dataset, args.root, args.split, args.limit,
                               args.device, getattr(args, "box_scorer", None), args.box_weight)


def add_beta_args(p: argparse.ArgumentParser) -> None:
    """The beta flags that `resolve_beta` reads: --beta | --beta-from | --target-len (one of them)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta", type=float, default=None, help="fixed beta of eq. 12")
    g.add_argument("--beta-from", default=None, help="a snippets summary JSON (dvsa align snippets) holding beta")
    g.add_argument("--target-len", type=float, default=SnippetConfig.target_len,
                   help="calibrate beta to this mean snippet length on the train split")


def resolve_beta(args, model, vocab, store, all_records) -> tuple[float, str]:
    """`align.loading.resolve_beta` of the `add_beta_args` flags."""
    return loading.resolve_beta(model, vocab, store, all_records, args.split, args.beta, args.beta_from, args.target_len,
                   args.device)
