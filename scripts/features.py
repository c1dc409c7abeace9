"""``dvsa features``: regions + CNN features of a dataset's images into a (resumable) feature store.

    dvsa features --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/feats --split train,val
    dvsa features --dataset coco --root ../shared/datasets/coco-mini --out runs/coco --backend given
    dvsa features --import-bottomup trainval_36.tsv --out runs/bottomup

Defaults come from `align.regions.RegionConfig` (backend rcnn: selective search + EfficientNet-Lite0 objectness,
19 boxes + the whole image); flags override it, ``--set FIELD=VALUE`` any other field. Run the same command
again after an interruption: finished images are skipped. Unreadable images are listed in STORE/failed.jsonl.
Under ``torchrun --nproc_per_node N`` every rank encodes its share into the same store.
Exit status: 0 done, 1 some images failed, 2 bad arguments or data.
"""
from __future__ import annotations

import argparse
import json
import sys

from dvsa.align.regions import RegionConfig, extract_features
from dvsa.align.regions.bottomup import import_bottomup
from dvsa.align.regions.proposals import load_given_boxes
from dvsa.align.regions.set_fields import parse_set
from dvsa.data.catalog import load_dataset
from dvsa.data.records import DataError, select_split


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvsa features", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="dataset reader name (data.catalog), e.g. flickr8k, coco, synthetic, folder")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--out", required=True, help="feature store folder (created or resumed)")
    p.add_argument("--split", help="comma-separated splits to encode (default: every record)")
    p.add_argument("--backend", choices=["rcnn", "frcnn", "given", "detectron2"])
    p.add_argument("--backbone", choices=["efficientnet_lite0", "resnet50", "vgg16"])
    p.add_argument("--pooling", choices=["warp", "roialign"])
    p.add_argument("--max-boxes", type=int)
    p.add_argument("--boxes", help="JSON of given boxes {image_id: [[x1,y1,x2,y2], ...]} or a COCO instances file")
    p.add_argument("--fp16", action="store_true", help="store features as float16")
    p.add_argument("--no-pretrained", action="store_true", help="untrained CNN weights (for tests)")
    p.add_argument("--device", help="cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--limit", type=int, help="encode only the first N records (after --split)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any other RegionConfig field")
    p.add_argument("--import-bottomup", metavar="TSV", help="import bottom-up-attention TSV features instead")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.import_bottomup:
        try:
            store = import_bottomup(args.import_bottomup, args.out, dtype="float16" if args.fp16 else "float32",
                                    progress=not args.quiet)
        except (DataError, OSError, ValueError) as e:
            print(f"dvsa features: {e}", file=sys.stderr)
            return 2
        print(f"{args.out}: {len(store)} images, dim {store.dim}")
        return 0
    if not args.dataset or not args.root:
        print("dvsa features: --dataset and --root are required (or --import-bottomup TSV)", file=sys.stderr)
        return 2

    try:
        overrides = parse_set(args.set)
        for flag, name in [("backend", "backend"), ("backbone", "backbone"), ("pooling", "pooling"),
                           ("max_boxes", "max_boxes"), ("device", "device"), ("workers", "workers"),
                           ("batch_size", "batch_size")]:
            if getattr(args, flag) is not None:
                overrides[name] = getattr(args, flag)
        if args.fp16:
            overrides["dtype"] = "float16"
        if args.no_pretrained:
            overrides["pretrained"] = False
        if args.quiet:
            overrides["progress"] = False
        cfg = RegionConfig(**overrides)
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
    except (DataError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"dvsa features: {e}", file=sys.stderr)
        return 2
    print(f"dvsa features: {len(records)} images -> {args.out}\n{json.dumps(cfg.recipe())}", file=sys.stderr)
    try:
        store = extract_features(records, args.out, cfg, given_boxes=given)
    except (RuntimeError, ValueError) as e:  # weights unavailable, no GPU, detectron2 missing, other settings ...
        print(f"dvsa features: {e}", file=sys.stderr)
        return 2
    wanted = {r.id for r in records}
    failed = [f for f in store.failed() if f["id"] in wanted]
    done = sum(1 for r in records if r.id in store)
    print(f"{args.out}: {done}/{len(records)} images stored, {len(failed)} failed (see failed.jsonl), dim {store.dim}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
