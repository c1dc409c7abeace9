"""``dvsa align boxscore``: fit the learned box score (`align.boxscore`) on the annotated boxes of a split.

    dvsa align boxscore --store runs/demo/features --dataset synthetic --root runs/demo/data --split train \
        --out runs/demo/boxscore.pt

Uses only the boxes of the split's records (no sentences). Reports, on ``--check-split`` when it has boxes, how
often the best-scored region around each annotated object is that object (IoU >= 0.5). The checkpoint is then
given to ``dvsa align snippets / evaluate / show`` as ``--box-scorer`` (with ``--box-weight``).
"""
from __future__ import annotations

import argparse
import json
import sys

from dvsa.align.boxscore import BoxScoreConfig
from dvsa.align.boxscore_fit import fit_box_score_on_split


def main(argv: list[str] | None = None) -> int:
    d = BoxScoreConfig
    p = argparse.ArgumentParser(prog="dvsa align boxscore", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="feature store folder (dvsa features)")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (synthetic, coco, ...)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default="train", help="split whose boxes fit the score (default train)")
    p.add_argument("--check-split", default="val", help="split to report the tight-box rate on (default val)")
    p.add_argument("--iou", type=float, default=d.iou, help=f"IoU that makes a region an object (default {d.iou})")
    p.add_argument("--geometry-bins", type=int, default=d.geometry_bins)
    p.add_argument("--l2", type=float, default=d.l2)
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--out", required=True, help="checkpoint to write")
    args = p.parse_args(argv)

    cfg = BoxScoreConfig(iou=args.iou, geometry_bins=args.geometry_bins, l2=args.l2, max_images=args.max_images)
    stats = fit_box_score_on_split(args.store, args.dataset, args.root, args.out, cfg, args.split, args.check_split)
    print(json.dumps(stats, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
