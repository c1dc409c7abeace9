"""``dvsa dense``: dense region captions for images, as JSON (and an HTML page).

    dvsa dense --checkpoint runs/gen_region/best.pt --images photos/ --out dense.json --html dense.html

Boxes come from the encoder that made the generator's training features (rebuilt from the checkpoint's
feature meta); a store of given boxes has no detector for new images, so its encoder runs with
``--backend`` (default rcnn) instead. Corrupt images are reported and skipped. Writes `--out` in DenseCap's
results.json layout (`generate.formats.to_densecap_results`)::

    {"results": [{"img_name": "a.jpg", "boxes": [[x, y, w, h], ...] (original pixels), "captions": [str, ...],
                  "scores": [float, ...]}, ...],
     "opt": {"checkpoint", "backend", "box_scorer", "score", the resolved DenseConfig (beam, max_len, top, ...),
             "image_info": [{"image_id", "path", "width", "height"}, ...] (one per result), "failed": [...]}}

and, with ``--html``, a self-contained page drawn from that document.
"""
from __future__ import annotations

import dataclasses
import sys
import time

from dvsa.align.boxscore import load_box_scorer
from dvsa.align.regions.encoder import RegionEncoder
from dvsa.data.errors import CheckpointError, UsageError
from dvsa.data.io import atomic_write_json
from dvsa.generate.dense import DenseConfig, dense_captions, image_files, resolve_config
from dvsa.generate.dense_html import write_dense_html
from dvsa.generate.formats import to_densecap_results
from dvsa.generate.inputs import FULL_FRAME_INPUTS
from dvsa.generate.pipeline.run_files import resolve_checkpoint
from dvsa.generate.train import load_generator
from dvsa.scripts._args import (
    add_checkpoint_arg,
    add_device_arg,
    add_images_arg,
    nonneg_int,
    parser,
    positive_int,
)


def parse_args(argv):
    d = DenseConfig()
    p = parser("dvsa dense", __doc__, quiet="no progress bars, do not print each image's regions")
    add_checkpoint_arg(p, "dense", help="generator checkpoint (a region model, ideally)")
    add_images_arg(p)
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--html", help="also write a self-contained HTML page here")
    p.add_argument("--beam", type=positive_int, default=d.beam, help=f"beam size >= 1 (default {d.beam})")
    p.add_argument("--top", type=nonneg_int, default=d.top, help="regions kept per image (0 = all)")
    p.add_argument("--nms", type=float, default=d.nms_iou, help="NMS IoU over the scored regions (negative = off)")
    p.add_argument("--max-len", type=positive_int, default=d.max_len, help="default: the generator's")
    p.add_argument("--length-norm", type=float, default=d.length_norm, help="default: the generator's")
    p.add_argument("--whole-image", action="store_true", default=d.whole_image, help="also caption row 0")
    p.add_argument("--full-frame-input", choices=FULL_FRAME_INPUTS, default=d.full_frame_input)
    p.add_argument("--backend", default=None,
                   help="box backend for the images (default: the checkpoint's; rcnn when that was 'given')")
    add_device_arg(p)
    add_checkpoint_arg(p, "box_score", required=False, flag="--box-scorer",
                       help="a learned box score (dvsa align boxscore, same feature recipe): ranks whole objects "
                            "first")
    p.add_argument("--box-weight", type=float, default=d.box_weight,
                   help=f"weight of log sigmoid(box score) in a region's score (default {d.box_weight})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nms_iou = None if args.nms is None or args.nms < 0 else args.nms
    cfg = DenseConfig(beam=args.beam, top=args.top, nms_iou=nms_iou, max_len=args.max_len, length_norm=args.length_norm,
                      whole_image=args.whole_image, full_frame_input=args.full_frame_input, box_weight=args.box_weight)
    model, vocab, gen_cfg, ck = load_generator(resolve_checkpoint(args.checkpoint, "dense"), device=args.device)
    box_scorer = load_box_scorer(resolve_checkpoint(args.box_scorer, "box_score")) if args.box_scorer else None
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
    except ValueError as e:  # a feature recipe this machine cannot rebuild
        raise CheckpointError(f"{args.checkpoint}: {e}") from e
    if box_scorer is not None and box_scorer.feature_dim != encoder.dim:
        raise CheckpointError(f"{args.box_scorer} was fitted on {box_scorer.feature_dim}-dim features; the "
                              f"generator's region encoder gives {encoder.dim}")
    paths = image_files(args.images)
    if not paths:
        raise UsageError(f"--images: no images in {' '.join(args.images)}")
    failed: list[dict] = []
    t0 = time.time()
    results = dense_captions(model, vocab, gen_cfg, encoder, [str(p) for p in paths], cfg, failed=failed,
                             box_scorer=box_scorer)
    dt = time.time() - t0
    resolved = dataclasses.asdict(resolve_config(cfg, gen_cfg))
    opt = {"checkpoint": str(args.checkpoint), **resolved, "backend": encoder.cfg.backend,
           "box_scorer": args.box_scorer, "score": "mean log-probability per word (END included) of the region's "
           "caption" + (", + box_weight * log sigmoid(box score)" if box_scorer is not None else "")}
    doc = to_densecap_results(results, opt, failed)
    atomic_write_json(args.out, doc)
    for r in [] if args.quiet else results:
        best = "; ".join(f"{d['caption']} ({d['score']:.2f})" for d in r["regions"][:3])
        print(f"{r['image_id']}: {len(r['regions'])} regions: {best}")
    print(f"{len(results)} images captioned, {len(failed)} skipped, {dt:.1f} s -> {args.out}")
    if args.html:
        write_dense_html(doc, args.html)
        print(f"html -> {args.html}")
    return 0 if results or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
