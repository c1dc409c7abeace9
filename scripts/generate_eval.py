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

import argparse
import dataclasses
import sys
from pathlib import Path

from dvsa.data.io import atomic_write_json
from dvsa.generate.caption_eval import REGION_BOXES, CaptionEvalConfig
from dvsa.generate.dense import FULL_FRAME_INPUTS


def _beams(text: str) -> tuple[int, ...]:
    try:
        beams = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--beam wants sizes like 1,7; got {text!r}") from None
    if not beams or min(beams) < 1:
        raise argparse.ArgumentTypeError(f"--beam wants sizes >= 1; got {text!r}")
    return beams


def parse_args(argv):
    d = CaptionEvalConfig()
    p = argparse.ArgumentParser(prog="dvsa generate eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--store", required=True, help="feature store folder of the split's images")
    p.add_argument("--dataset", required=True, help="dataset name (data.catalog)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default=d.split, help="val | test (| train)")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--beam", type=_beams, default=d.beams, help="beam sizes, e.g. 1,7 (default: the generator's)")
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--length-norm", type=float, default=d.length_norm)
    p.add_argument("--regions", action="store_true", help="also evaluate on the split's described regions")
    p.add_argument("--region-boxes", choices=REGION_BOXES, default=d.region_boxes)
    p.add_argument("--region-beam", type=int, default=d.region_beam)
    p.add_argument("--min-iou", type=float, default=d.min_iou)
    p.add_argument("--full-frame-input", choices=FULL_FRAME_INPUTS, default=d.full_frame_input)
    p.add_argument("--snippets", help="snippets JSON lines: score the store regions they name against them")
    p.add_argument("--no-full-frame", action="store_true", help="skip the full-frame evaluation")
    p.add_argument("--no-java", action="store_true", help="no Java: Python tokenizer, no METEOR")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from dvsa.data.catalog import load_dataset
    from dvsa.data.features import FeatureStore
    from dvsa.data.records import DataError, select_split
    from dvsa.generate.caption_eval import (
        caption_split,
        region_caption_metrics,
        score_region_items,
        snippet_references,
    )
    from dvsa.generate.metrics import (
        caption_metrics,
        format_metrics,
        format_table,
        references_of,
        write_coco_results,
    )
    from dvsa.generate.train import load_generator

    try:
        model, vocab, gen_cfg, _ = load_generator(args.checkpoint, device=args.device)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"dvsa generate eval: {e}", file=sys.stderr)
        return 2
    cfg = CaptionEvalConfig(
        split=args.split, beams=args.beam or (int(gen_cfg.beam),),
        max_len=args.max_len or gen_cfg.max_len,
        length_norm=gen_cfg.length_norm if args.length_norm is None else args.length_norm,
        region_beam=args.region_beam, region_boxes=args.region_boxes, min_iou=args.min_iou,
        full_frame_input=args.full_frame_input, use_java=False if args.no_java else None)
    cfg.region_beam = cfg.region_beam or cfg.beams[0]
    try:
        records = select_split(load_dataset(args.dataset, args.root), cfg.split)
        store = FeatureStore(args.store)
    except (DataError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"dvsa generate eval: {e}", file=sys.stderr)
        return 2
    if store.dim != model.feat_dim:
        print(f"dvsa generate eval: {args.store}: features of size {store.dim}, the generator wants "
              f"{model.feat_dim}", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    out = {"checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": cfg.split,
           "generator_input": gen_cfg.input, "config": dataclasses.asdict(cfg), "n_images": len(records)}

    if not args.no_full_frame:
        gts = references_of(records)
        out["full_frame"] = {}
        for beam in cfg.beams:
            res, skipped = caption_split(model, vocab, gen_cfg, store, [r for r in records if r.id in gts], beam,
                                         cfg.max_len, cfg.length_norm, cfg.batch)
            if not res:
                print(f"dvsa generate eval: no image of split {cfg.split!r} is in {args.store}", file=sys.stderr)
                return 2
            info: dict = {}
            m = caption_metrics({k: gts[k] for k in res}, res, use_java=cfg.use_java, info=info)
            cap_path = write_coco_results(out_path.with_name(f"{out_path.stem}.beam{beam}.captions.json"), res)
            out["full_frame"][f"beam{beam}"] = {"metrics": m, "n_images": len(res), "not_in_store": len(skipped),
                                                "captions": str(cap_path), "metric_info": info}
            print(f"full frame, beam {beam} ({len(res)} images): {format_metrics(m)}")

    if args.regions:
        try:
            r = region_caption_metrics(model, vocab, gen_cfg, records, store, boxes=cfg.region_boxes, root=args.root,
                                       beam=cfg.region_beam, max_len=cfg.max_len, length_norm=cfg.length_norm,
                                       full_frame_input=cfg.full_frame_input, min_iou=cfg.min_iou,
                                       batch=cfg.batch, use_java=cfg.use_java)
        except ValueError as e:
            print(f"dvsa generate eval: regions: {e}", file=sys.stderr)
            return 2
        caps = r.pop("captions")
        r["captions"] = str(write_coco_results(out_path.with_name(f"{out_path.stem}.regions.captions.json"), caps))
        out["regions"] = {"source": "ground-truth region descriptions", **r}
        iou = f", mean IoU of matched store regions {r['mean_iou']:.2f}" if r.get("mean_iou") is not None else ""
        print(f"regions ({r['n_regions']}, boxes: {r['boxes']}{iou}), beam {r['beam']}: {format_metrics(r['metrics'])}")

    if args.snippets:
        try:
            items = snippet_references(args.snippets, store, [rec.id for rec in records])
            s = score_region_items(model, vocab, gen_cfg, items, cfg.region_beam, cfg.max_len, cfg.length_norm,
                                   cfg.full_frame_input, cfg.batch, cfg.use_java)
        except (DataError, ValueError, OSError) as e:
            print(f"dvsa generate eval: snippets: {e}", file=sys.stderr)
            return 2
        caps = s.pop("captions")
        s["captions"] = str(write_coco_results(out_path.with_name(f"{out_path.stem}.snippets.captions.json"), caps))
        out["snippets"] = {"source": str(args.snippets), "boxes": "store rows named by the snippets",
                           "beam": cfg.region_beam, **s}
        print(f"snippet regions ({s['n_regions']}), beam {cfg.region_beam}: {format_metrics(s['metrics'])}")

    atomic_write_json(out_path, out)
    table = {f"full frame, beam {k[4:]}": v["metrics"] for k, v in out.get("full_frame", {}).items()}
    if "regions" in out:
        table[f"regions ({out['regions']['boxes']}), beam {out['regions']['beam']}"] = out["regions"]["metrics"]
    if "snippets" in out:
        table[f"snippet regions, beam {out['snippets']['beam']}"] = out["snippets"]["metrics"]
    print(format_table(table))
    print(f"-> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
