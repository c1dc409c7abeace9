"""``dvsa align evaluate``: word-to-region and phrase grounding accuracy, MRF next to the per-word argmax.

    dvsa align evaluate --checkpoint runs/align/model.pt --store runs/features --dataset synthetic \
        --root runs/synth --split test --out runs/align_eval.json

beta: ``--beta B``, or ``--beta-from snippets.summary.json`` (the beta the snippets were made with), or
calibrated to ``--target-len`` on a sample of the dataset's train split (the evaluated split when there is no
train split). ``--sweep 0.3,1,3`` adds a row per extra beta (scores are computed once). ``--box-scorer
boxscore.pt --box-weight 0.5`` adds a learned box score (``dvsa align boxscore``) to the word-region scores.
Needs records with phrases linked to boxes (synthetic, flickr30k_entities). Prints a table and writes the
metrics (fractions 0..1) with the resolved settings as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dvsa.align.grounding import evaluate_alignment, format_table, word_groups_for
from dvsa.align.snippets import SnippetConfig
from dvsa.scripts._args import (
    add_beta_args,
    add_model_args,
    nonneg_floats,
    open_inputs,
    parser,
    positive_int,
    resolve_beta,
    unit_float,
)


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align evaluate", __doc__)
    add_model_args(p, "test")
    add_beta_args(p)
    p.add_argument("--sweep", type=nonneg_floats, default=(),
                   help="extra betas to report beside, comma-separated (e.g. 0.3,1,3)")
    p.add_argument("--iou", type=unit_float, default=0.5, help="IoU a box needs with the ground truth to count")
    p.add_argument("--batch-size", type=positive_int, default=SnippetConfig.batch_size)
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    args = p.parse_args(argv)

    model, vocab, store, records, all_records = open_inputs(args)
    beta, how = resolve_beta(args, model, vocab, store, all_records)
    sweep = args.sweep
    res = evaluate_alignment(model, vocab, store, records, beta, iou=args.iou, batch_size=args.batch_size,
                             device=args.device, sweep=sweep, groups=word_groups_for(args.dataset))
    res["beta_source"] = how
    prior = f"; box score {args.box_scorer} x {args.box_weight:g}" if args.box_scorer else ""
    print(f"{args.dataset} {args.split}: beta {beta:.4g} ({how}){prior}")
    print(format_table(res))
    if res["n_missing_images"]:
        print(f"warning: {res['n_missing_images']} images are not in the store and were skipped", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        run = {"checkpoint": args.checkpoint, "store": args.store, "dataset": args.dataset, "root": args.root,
               "split": args.split, "limit": args.limit, "iou": args.iou, "box_scorer": args.box_scorer,
               "box_weight": args.box_weight if args.box_scorer else None, **res}
        out.write_text(json.dumps(run, indent=2))
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
