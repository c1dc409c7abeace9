"""``dvsa bench boxes`` (or ``python -m dvsa.scripts.bench_boxes``): do the kept boxes hold the objects?

    dvsa bench boxes --n-images 200 \\
        --data coco:../shared/datasets/coco-mini --data flickr8k:../shared/datasets/flickr8k:val \\
        --data flickr8k:../shared/datasets/flickr8k:heldout

For every dataset (``NAME:ROOT[:SPLIT]``; SPLIT ``heldout`` = the last 500 Flickr8k train photos, where the
region recipe's choices are made; ``val`` = Flickr8k dev, for measuring only) and every configuration (``old``:
the recipe before issue 16, ``new``: `RegionConfig` defaults, plus ``--variant NAME:KEY=VALUE,...``), prints the
recall at IoU 0.5 of the annotated objects by size (all, small < 32², medium, large >= 96², >= 32²) by the
candidates (before the cut) and by the kept boxes (19 + the whole image), images/s, and the issue's targets.
Without --data it measures coco-mini and Flickr8k dev beside the project. The code is
`dvsa.align.regions.boxbench`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from dvsa.align.regions.boxbench import (
    BoxesBenchConfig,
    bench_boxes,
    format_boxes_report,
)
from dvsa.align.regions.config import RegionConfig
from dvsa.scripts._args import add_set_arg, parser, positive_int

SHARED = Path(__file__).resolve().parents[1].parent / "shared/datasets"


def main(argv: list[str] | None = None) -> int:
    d = BoxesBenchConfig()
    p = parser("dvsa bench boxes", __doc__)
    p.add_argument("--data", action="append", default=[], metavar="NAME:ROOT[:SPLIT]",
                   help="dataset to measure (repeatable); default coco-mini and Flickr8k dev beside the project")
    p.add_argument("--n-images", dest="n", type=positive_int, default=d.n, help="annotated images per dataset")
    p.add_argument("--held-out", type=positive_int, default=d.held_out, help="size of the held-out train tail")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="another RegionConfig recipe to measure beside old and new, e.g. "
                        "tiny:max_boxes=2,ss_mode=single (repeatable)")
    add_set_arg(p, {"region": RegionConfig}, "region.pretrained=false (applies to every configuration)")
    args = p.parse_args(argv)
    data = args.data or [f"coco:{SHARED / 'coco-mini'}", f"flickr8k:{SHARED / 'flickr8k'}:val"]
    cfg = BoxesBenchConfig(data=data, n=args.n, held_out=args.held_out, configs=args.variant,
                           base=args.set["region"])
    try:
        res = bench_boxes(cfg)
    except ValueError as e:
        p.error(str(e))
    print(format_boxes_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
