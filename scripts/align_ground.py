"""``dvsa align ground``: phrase grounding on real photographs, the aligner beside box baselines.

    dvsa align ground --store /tmp/g/coco_store --dataset coco --root ../shared/datasets/coco-mini
    dvsa align ground --store runs/f8k_dev_store --dataset flickr8k --root ../shared/datasets/flickr8k \
        --split val --checkpoint runs/align/model.pt --beta-from runs/snippets.summary.json --out ground.json

Items: the records' phrases linked to boxes (flickr8k with its Entities annotations, flickr30k_entities,
synthetic) or, on COCO, the caption words naming a category present in the image (`data.coco_words`). For
each item: IoU >= 0.5 accuracy and pointing accuracy (the centre of the chosen box inside a ground-truth box)
of the MRF snippets and the per-word argmax (with ``--checkpoint``) beside the whole image, the largest kept
box, a random kept box (expected value) and the best kept box (the bound); per content word and per type /
category; and the kept boxes' recall by COCO size class (`align.ground`). Without ``--checkpoint`` only the
baselines and the recall (they need only the feature store). Records whose image is not in the store are
skipped (counted). beta: ``--beta``, ``--beta-from snippets.summary.json``, or calibrated to ``--target-len``
on the train split. Prints a table; ``--out`` writes the JSON (fractions 0..1).

A pipeline run folder as ``--checkpoint`` grounds as the pipeline does: with the run's learned box score at the
weight it chose and the run's beta (``--box-scorer`` / ``--box-weight`` and the beta flags override them).

    dvsa align ground --checkpoint runs/flickr8k --store runs/coco_store --dataset coco \
        --root ../shared/datasets/coco-mini
"""
from __future__ import annotations

import sys
from pathlib import Path

from dvsa.align import loading
from dvsa.align.aligner import run_box_scorer, run_calibrated_beta
from dvsa.align.boxscore import BoxPrior, load_box_scorer
from dvsa.align.ground import evaluate_grounding, format_grounding_table
from dvsa.align.snippets import SnippetConfig
from dvsa.data import catalog
from dvsa.data.features import FeatureStore
from dvsa.data.io import atomic_write_json
from dvsa.data.reader_args import dataset_kwargs
from dvsa.data.records import select_split
from dvsa.generate.pipeline.run_files import resolve_checkpoint
from dvsa.scripts._args import (
    BOX_WEIGHT,
    add_beta_args,
    add_checkpoint_arg,
    add_data_args,
    add_device_arg,
    nonneg_float,
    parser,
    positive_int,
    unit_float,
)


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align ground", __doc__)
    add_data_args(p, "all", "split to evaluate (default: every record)", limit=True)
    add_checkpoint_arg(p, "align", required=False, help="alignment checkpoint (without it: baselines only)")
    add_beta_args(p, None, " (default: a run folder's own beta, else "
                           f"{SnippetConfig.target_len:g})")
    add_checkpoint_arg(p, "box_score", required=False, flag="--box-scorer",
                       help="a learned box score (dvsa align boxscore) whose WEIGHT x score is added to every "
                            "word's score for a region (default: a run folder's own)")
    p.add_argument("--box-weight", type=nonneg_float, default=None,
                   help=f"WEIGHT of the box score (default: the weight the run chose, else {BOX_WEIGHT:g}; "
                        "0: none)")
    p.add_argument("--iou", type=unit_float, default=0.5, help="IoU a box needs with the ground truth to count")
    p.add_argument("--batch-size", type=positive_int, default=SnippetConfig.batch_size)
    add_device_arg(p, SnippetConfig.device)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    all_records = catalog.load_dataset(args.dataset, args.root, **dataset_kwargs(args.dataset_arg))
    records = all_records if args.split == "all" else select_split(all_records, args.split)
    store = FeatureStore(args.store)
    records = [r for r in records if r.id in store] if args.limit is None else records
    if args.limit is not None:
        records = records[: args.limit]
    model = vocab = beta = how = scorer = None
    weight = 0.0
    if args.checkpoint:
        model, vocab, _ = loading.load_model(str(resolve_checkpoint(args.checkpoint, "align")), args.device)
        run = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else None
        scorer, weight = run_box_scorer(run)
        if args.box_scorer:
            scorer = load_box_scorer(resolve_checkpoint(args.box_scorer, "box_score"))
            weight = weight or BOX_WEIGHT
        weight = weight if args.box_weight is None else args.box_weight
        if scorer is not None and weight > 0:
            model = BoxPrior(model, scorer, weight)
        split = "train" if args.split == "all" else args.split
        flags = args.beta is not None or args.beta_from or args.target_len is not None
        found = None if flags else run_calibrated_beta(run)
        beta, how = found or loading.resolve_beta(model, vocab, store, all_records, split, args.beta,
                                                  args.beta_from, args.target_len or SnippetConfig.target_len,
                                                  args.device)
    res = evaluate_grounding(model, vocab, store, records, beta, iou=args.iou, batch_size=args.batch_size,
                             device=args.device)
    res["beta_source"] = how
    res["box_weight"] = weight if isinstance(model, BoxPrior) else 0.0
    print(f"{args.dataset} {args.split}: " + (f"beta {beta:.4g} ({how}), box score weight {res['box_weight']:g}"
                                            if model is not None else "baselines only (no --checkpoint)"))
    print(format_grounding_table(res))
    if res["n_missing_images"]:
        print(f"warning: {res['n_missing_images']} images are not in the store and were skipped", file=sys.stderr)
    if args.out:
        run = {"checkpoint": args.checkpoint, "store": args.store, "dataset": args.dataset, "root": args.root,
               "dataset_args": args.dataset_arg, "split": args.split, "limit": args.limit, **res}
        print(f"-> {atomic_write_json(args.out, run, indent=2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
