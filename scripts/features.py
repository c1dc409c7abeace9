"""``dvsa features``: regions + CNN features of a dataset's images into a (resumable) feature store.

    dvsa features --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/feats --split train,val
    dvsa features --dataset coco --root ../shared/datasets/coco-mini --out runs/coco --backend given
    dvsa features --import-bottomup trainval_36.tsv --out runs/bottomup

Defaults come from `align.regions.RegionConfig` (backend rcnn: selective search + EfficientNet-Lite0 objectness,
19 boxes + the whole image); flags override it, ``--set region.FIELD=VALUE`` any other field. Run the same command
again after an interruption: finished images are skipped. Unreadable images are listed in STORE/failed.jsonl.
Under ``torchrun --nproc_per_node N`` every rank encodes its share into the same store.
Exit status: 0 done, 1 some images failed or bad data, 2 bad arguments or settings.
"""
from __future__ import annotations

import json
import sys

from dvsa.align.regions import RegionConfig, extract_features
from dvsa.align.regions.bottomup import import_bottomup
from dvsa.align.regions.config import BACKBONES
from dvsa.align.regions.proposals import load_given_boxes
from dvsa.data.catalog import load_dataset
from dvsa.data.errors import DvsaError, UsageError
from dvsa.data.overrides import build_config
from dvsa.data.records import select_split
from dvsa.scripts._args import (
    Parser,
    add_device_arg,
    add_set_arg,
    nonneg_int,
    parser,
    positive_int,
)


def build_parser() -> Parser:
    p = parser("dvsa features", __doc__)
    p.add_argument("--dataset", help="dataset reader name (data.catalog), e.g. flickr8k, coco, synthetic, folder")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--out", required=True, help="feature store folder (created or resumed)")
    p.add_argument("--split", help="comma-separated splits to encode (default: every record)")
    p.add_argument("--backend", choices=["rcnn", "frcnn", "given", "detectron2"])
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--pooling", choices=["warp", "roialign"])
    p.add_argument("--max-boxes", type=positive_int)
    p.add_argument("--boxes", help="JSON of given boxes {image_id: [[x1,y1,x2,y2], ...]} or a COCO instances file")
    p.add_argument("--fp16", action="store_true", help="store features as float16")
    p.add_argument("--no-pretrained", action="store_true", help="untrained CNN weights (for tests)")
    add_device_arg(p, None, help=f"cpu, cuda or auto (default RegionConfig.device: {RegionConfig.device})")
    p.add_argument("--workers", type=nonneg_int, help="DataLoader worker processes")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--limit", type=positive_int, help="encode only the first N records (after --split)")
    add_set_arg(p, {"region": RegionConfig}, "region.score_pooling=warp")
    p.add_argument("--import-bottomup", metavar="TSV", help="import bottom-up-attention TSV features instead")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.import_bottomup:
        store = import_bottomup(args.import_bottomup, args.out, dtype="float16" if args.fp16 else "float32",
                                progress=not args.quiet)
        print(f"{args.out}: {len(store)} images, dim {store.dim}")
        return 0
    if not args.dataset or not args.root:
        raise UsageError("--dataset and --root are required (or --import-bottomup TSV)")

    flags = {name: getattr(args, name) for name in ("backend", "backbone", "pooling", "max_boxes", "device",
                                                    "workers", "batch_size") if getattr(args, name) is not None}
    if args.fp16:
        flags["dtype"] = "float16"
    if args.no_pretrained:
        flags["pretrained"] = False
    if args.quiet:
        flags["progress"] = False
    cfg = build_config(RegionConfig, flags, args.set["region"])
    records = load_dataset(args.dataset, args.root)
    if args.split:
        seen, chosen = set(), []
        for split in args.split.split(","):
            for r in select_split(records, split.strip()):
                if r.id not in seen:
                    seen.add(r.id)
                    chosen.append(r)
        records = chosen
    if args.limit is not None:
        records = records[: args.limit]
    given = load_given_boxes(args.boxes) if args.boxes else None
    if given is not None and cfg.backend != "given":
        print("dvsa features: --boxes given: using backend 'given'", file=sys.stderr)
        cfg = RegionConfig(**{**cfg.__dict__, "backend": "given"})
    print(f"dvsa features: {len(records)} images -> {args.out}\n{json.dumps(cfg.recipe())}", file=sys.stderr)
    try:
        store = extract_features(records, args.out, cfg, given_boxes=given)
    except DvsaError:
        raise
    except ValueError as e:  # settings the store or this machine cannot take (another recipe in OUT, ...)
        raise UsageError(str(e)) from e
    except RuntimeError as e:  # weights unavailable, detectron2 missing, ...
        raise DvsaError(str(e)) from e
    wanted = {r.id for r in records}
    failed = [f for f in store.failed() if f["id"] in wanted]
    done = sum(1 for r in records if r.id in store)
    print(f"{args.out}: {done}/{len(records)} images stored, {len(failed)} failed (see failed.jsonl), dim {store.dim}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
