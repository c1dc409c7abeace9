"""``dvsa align boxscore``: fit the learned box score (`align.boxscore`) on the annotated boxes of a split.

    dvsa align boxscore --store runs/demo/features --dataset synthetic --root runs/demo/data --split train \
        --out runs/demo/boxscore.pt

Uses only the boxes of the split's records (no sentences). Reports, on ``--check-split`` when it has boxes, how
often the best-scored region around each annotated object is that object (IoU >= 0.5). The checkpoint is then
given to ``dvsa align snippets / evaluate / show`` as ``--box-scorer`` (with ``--box-weight``). Other
`align.boxscore.BoxScoreConfig` fields: ``--set box_score.FIELD=VALUE``.
"""
from __future__ import annotations

import json
import sys

from dvsa.align.boxscore import BoxScoreConfig
from dvsa.align.boxscore_fit import fit_box_score_on_split
from dvsa.data.overrides import build_config
from dvsa.scripts._args import add_set_arg, parser, unit_float


def main(argv: list[str] | None = None) -> int:
    d = BoxScoreConfig
    p = parser("dvsa align boxscore", __doc__)
    p.add_argument("--store", required=True, help="feature store folder (dvsa features)")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (synthetic, coco, ...)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default="train", help="split whose boxes fit the score (default train)")
    p.add_argument("--check-split", default="val", help="split to report the tight-box rate on (default val)")
    p.add_argument("--iou", type=unit_float, default=d.iou,
                   help=f"IoU that makes a region an object (default {d.iou})")
    add_set_arg(p, {"box_score": BoxScoreConfig}, "box_score.geometry_bins=8 --set box_score.l2=0.01")
    p.add_argument("--out", required=True, help="checkpoint to write")
    args = p.parse_args(argv)

    cfg = build_config(BoxScoreConfig, {"iou": args.iou}, args.set["box_score"])
    stats = fit_box_score_on_split(args.store, args.dataset, args.root, args.out, cfg, args.split, args.check_split)
    print(json.dumps(stats, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
