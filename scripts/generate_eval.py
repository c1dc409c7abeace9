"""``dvsa generate eval``: caption a split with a generator and score it (BLEU-1..4, METEOR, ROUGE-L, CIDEr).

    dvsa generate eval --checkpoint runs/gen/best.pt --store runs/features --dataset flickr8k \\
        --root ../shared/datasets/flickr8k --split val --beam 1,7 --out runs/gen/eval.json

Full frames: every image of the split in the store is captioned at each beam size and scored against its
sentences (COCO caption evaluation; x100 in the printed table). Region level: with ``--regions`` the described
ground-truth regions of the split (e.g. the synthetic scenes' region descriptions) are captioned and scored
against their own description (``--region-boxes match|encode``, see `generate.caption_eval`); with
``--snippets FILE`` the store's regions named by a snippets file are scored against their snippets.
Writes `--out` (metrics, resolved config, which region boxes were used) and the captions of every beam size
in COCO results format next to it (``<out stem>.beam<K>.captions.json``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from dvsa.data.catalog import load_dataset
from dvsa.data.errors import DvsaError
from dvsa.data.features import FeatureStore
from dvsa.data.io import atomic_write_json
from dvsa.data.records import select_split
from dvsa.generate.caption_eval import (
    REGION_BOXES,
    CaptionEvalConfig,
    evaluate_generator,
    metrics_rows,
)
from dvsa.generate.inputs import FULL_FRAME_INPUTS
from dvsa.generate.metrics import format_table
from dvsa.generate.pipeline.run_files import resolve_checkpoint
from dvsa.generate.train import load_generator
from dvsa.scripts._args import (
    add_checkpoint_arg,
    add_device_arg,
    parser,
    positive_int,
    positive_ints,
    unit_float,
)


def parse_args(argv):
    d = CaptionEvalConfig
    p = parser("dvsa generate eval", __doc__)
    add_checkpoint_arg(p, "caption", help="generator checkpoint (dvsa generate train)")
    p.add_argument("--store", required=True, help="feature store folder of the split's images")
    p.add_argument("--dataset", required=True, help="dataset name (data.catalog)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default=d.split, help="val | test (| train)")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--beam", type=positive_ints, default=d.beams,
                   help="beam sizes >= 1, e.g. 1,7 (default: the generator's)")
    p.add_argument("--max-len", type=positive_int, default=d.max_len)
    p.add_argument("--length-norm", type=float, default=d.length_norm)
    p.add_argument("--regions", action="store_true", help="also evaluate on the split's described regions")
    p.add_argument("--region-boxes", choices=REGION_BOXES, default=d.region_boxes)
    p.add_argument("--region-beam", type=positive_int, default=d.region_beam)
    p.add_argument("--min-iou", type=unit_float, default=d.min_iou)
    p.add_argument("--full-frame-input", choices=FULL_FRAME_INPUTS, default=d.full_frame_input)
    p.add_argument("--snippets", help="snippets JSON lines: score the store regions they name against them")
    p.add_argument("--no-full-frame", action="store_true", help="skip the full-frame evaluation")
    p.add_argument("--no-java", action="store_true", help="no Java: Python tokenizer, no METEOR")
    add_device_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, vocab, gen_cfg, _ = load_generator(resolve_checkpoint(args.checkpoint, "caption"), device=args.device)
    cfg = CaptionEvalConfig(split=args.split, beams=args.beam, max_len=args.max_len, length_norm=args.length_norm,
                            region_beam=args.region_beam, region_boxes=args.region_boxes, min_iou=args.min_iou,
                            full_frame_input=args.full_frame_input, use_java=False if args.no_java else None)
    records = select_split(load_dataset(args.dataset, args.root), cfg.split)
    store = FeatureStore(args.store)
    try:
        out = evaluate_generator(model, vocab, gen_cfg, records, store, cfg, args.out, full_frame=not args.no_full_frame,
                                 regions=args.regions, snippets=args.snippets, root=args.root,
                                 checkpoint=args.checkpoint, dataset=args.dataset)
    except DvsaError:
        raise
    except ValueError as e:  # a store or snippets file that does not fit the generator: the message names it
        raise DvsaError(str(e)) from e
    atomic_write_json(args.out, out)
    print(format_table(metrics_rows(out)))
    print(f"-> {Path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
