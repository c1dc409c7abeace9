"""``dvsa align snippets``: MRF snippets (eqs. 10-12) of a split as JSON lines.

    dvsa align snippets --checkpoint runs/align/best.pt --store runs/features --dataset flickr8k \
        --root ../shared/datasets/flickr8k --split train --target-len 2.5 --out runs/snippets.jsonl

beta is fixed with ``--beta`` or calibrated on a sample of the split to ``--target-len`` (default from
`align.snippets.SnippetConfig`); any other SnippetConfig field with ``--set snippets.FIELD=VALUE``.
Writes ``OUT`` and ``OUT-stem.summary.json`` (resolved config + counts).
The model and data flags are shared with ``dvsa align evaluate`` and ``dvsa align show`` (`scripts._args`).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from dvsa.align.snippets import SnippetConfig, write_snippets
from dvsa.data.overrides import build_config
from dvsa.scripts._args import (
    add_model_args,
    add_seed_arg,
    add_set_arg,
    nonneg_float,
    open_inputs,
    parser,
    positive_float,
)


def main(argv: list[str] | None = None) -> int:
    d = SnippetConfig()
    p = parser("dvsa align snippets", __doc__)
    add_model_args(p, "train")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta", type=nonneg_float, default=d.beta, help="fixed beta of eq. 12 (>= 0)")
    g.add_argument("--target-len", type=positive_float, default=d.target_len,
                   help=f"calibrate beta to this mean snippet length in words (default {d.target_len})")
    add_set_arg(p, {"snippets": SnippetConfig}, "snippets.calib_sentences=500 --set snippets.score=mean")
    add_seed_arg(p, d.seed)
    p.add_argument("--out", required=True, help="output JSON lines file")
    args = p.parse_args(argv)

    flags = {"beta": args.beta, "target_len": args.target_len, "device": args.device, "seed": args.seed}
    cfg = build_config(SnippetConfig, flags, args.set["snippets"], choices={"score": ("sum", "mean")})
    model, vocab, store, records, _ = open_inputs(args)
    summary = write_snippets(model, vocab, store, records, args.out, cfg, progress=not args.quiet)
    out = Path(args.out)
    side = out.with_name(out.stem + ".summary.json")
    run = {"config": dataclasses.asdict(cfg), "checkpoint": args.checkpoint, "store": args.store,
           "box_scorer": args.box_scorer, "box_weight": args.box_weight if args.box_scorer else None,
           "dataset": args.dataset, "root": args.root, "split": args.split, "limit": args.limit, **summary}
    side.write_text(json.dumps(run, indent=2))
    if summary["missing_images"]:
        print(f"warning: {len(summary['missing_images'])} images of the split are not in the store "
              f"(first: {summary['missing_images'][:3]})", file=sys.stderr)
    how = f"calibrated to {cfg.target_len} words (sample: {summary['calib_len']:.2f})" if cfg.beta is None else "fixed"
    print(f"beta {summary['beta']:.4g} ({how}); {summary['n_snippets']} snippets from {summary['n_sentences']} "
          f"sentences, mean length {summary['mean_snippet_len']:.2f} words -> {out} (+ {side.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
