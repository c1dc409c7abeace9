"""``dvsa dense``: dense region captions for images, as JSON (and an HTML page).

    dvsa dense --checkpoint runs/gen_region/best.pt --images photos/ --out dense.json --html dense.html

Boxes come from the encoder that made the generator's training features (rebuilt from the checkpoint's
feature meta); a store of given boxes has no detector for new images, so its encoder runs with
``--backend`` (default rcnn) instead. Corrupt images are reported and skipped. Writes `--out` (results and the
resolved config) and, with ``--html``, a self-contained page.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from dvsa.align.boxscore import load_box_scorer
from dvsa.align.regions.encoder import RegionEncoder
from dvsa.data.io import atomic_write_json
from dvsa.generate.dense import DenseConfig, dense_captions, image_files, resolve_config
from dvsa.generate.dense_html import write_dense_html
from dvsa.generate.inputs import FULL_FRAME_INPUTS
from dvsa.generate.train import load_generator
from dvsa.scripts._args import add_device_arg


def parse_args(argv):
    d = DenseConfig()
    p = argparse.ArgumentParser(prog="dvsa dense", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="generator checkpoint (a region model, ideally)")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--html", help="also write a self-contained HTML page here")
    p.add_argument("--beam", type=int, default=d.beam)
    p.add_argument("--top", type=int, default=d.top, help="regions kept per image (0 = all)")
    p.add_argument("--nms", type=float, default=d.nms_iou, help="NMS IoU over the scored regions (negative = off)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="default: the generator's")
    p.add_argument("--length-norm", type=float, default=d.length_norm, help="default: the generator's")
    p.add_argument("--whole-image", action="store_true", default=d.whole_image, help="also caption row 0")
    p.add_argument("--full-frame-input", choices=FULL_FRAME_INPUTS, default=d.full_frame_input)
    p.add_argument("--backend", default=None,
                   help="box backend for the images (default: the checkpoint's; rcnn when that was 'given')")
    add_device_arg(p)
    p.add_argument("--box-scorer", default=None,
                   help="a learned box score (dvsa align boxscore, same feature recipe): ranks whole objects first")
    p.add_argument("--box-weight", type=float, default=d.box_weight,
                   help=f"weight of log sigmoid(box score) in a region's score (default {d.box_weight})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    nms_iou = None if args.nms is None or args.nms < 0 else args.nms
    cfg = DenseConfig(beam=args.beam, top=args.top, nms_iou=nms_iou, max_len=args.max_len, length_norm=args.length_norm,
                      whole_image=args.whole_image, full_frame_input=args.full_frame_input, box_weight=args.box_weight)
    try:
        model, vocab, gen_cfg, ck = load_generator(args.checkpoint, device=args.device)
        box_scorer = None
        if args.box_scorer:
            box_scorer = load_box_scorer(args.box_scorer)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"dvsa dense: {e}", file=sys.stderr)
        return 2
    meta = ck.get("features") or {}
    backend = args.backend
    if backend is None and meta.get("region_config", {}).get("backend") == "given":
        backend = "rcnn"
        print("note: the generator's features used given boxes; detecting boxes with backend rcnn", file=sys.stderr)
    overrides = {"device": args.device, "progress": False}
    if backend:
        overrides["backend"] = backend
    try:
        encoder = RegionEncoder.from_meta(meta, **overrides)
    except ValueError as e:
        print(f"dvsa dense: {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    if box_scorer is not None and box_scorer.feature_dim != encoder.dim:
        print(f"dvsa dense: {args.box_scorer} was fitted on {box_scorer.feature_dim}-dim features; the generator's "
              f"region encoder gives {encoder.dim}", file=sys.stderr)
        return 2
    paths = image_files(args.images)
    if not paths:
        print(f"dvsa dense: no images in {args.images}", file=sys.stderr)
        return 2
    failed: list[dict] = []
    t0 = time.time()
    results = dense_captions(model, vocab, gen_cfg, encoder, [str(p) for p in paths], cfg, failed=failed,
                             box_scorer=box_scorer)
    dt = time.time() - t0
    resolved = dataclasses.asdict(resolve_config(cfg, gen_cfg))
    out = {"checkpoint": str(args.checkpoint), "config": resolved, "backend": encoder.cfg.backend,
           "score": "mean log-probability per word (END included) of the region's caption",
           "images": results, "failed": failed}
    atomic_write_json(args.out, out)
    for r in results:
        best = "; ".join(f"{d['caption']} ({d['score']:.2f})" for d in r["regions"][:3])
        print(f"{r['image_id']}: {len(r['regions'])} regions: {best}")
    print(f"{len(results)} images captioned, {len(failed)} skipped, {dt:.1f} s -> {args.out}")
    if args.html:
        write_dense_html(results, args.html, failed=failed)
        print(f"html -> {args.html}")
    return 0 if results or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
