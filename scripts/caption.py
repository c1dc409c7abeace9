"""``dvsa caption``: full-frame captions for any images, with a trained generator.

    dvsa caption --checkpoint runs/gen/model.pt --images photos/ more.jpg --out captions.json --beam 7

The image features are computed here by the encoder that made the generator's training features (rebuilt from
the checkpoint's feature meta with `RegionEncoder.from_meta`); only the whole image is encoded (no boxes). The
captions are printed (``path<TAB>caption``) and written to `--out` as JSON::

    {"checkpoint": str, "beam": int, "max_len": int, "length_norm": float,
     "captions": [{"image_id": str (file stem), "path": str, "caption": str, "logprob": float}, ...],
     "failed": [{"path": str, "reason": str}, ...]}

A corrupt or unreadable image is reported on stderr, listed under "failed", and skipped. Exit status 0 when at
least one image was captioned, 1 when none was, 2 for bad arguments or checkpoint.
"""
from __future__ import annotations

import argparse
import sys
import time

from dvsa.align.regions.encoder import RegionEncoder
from dvsa.data.io import atomic_write_json
from dvsa.generate.captioning import caption_images
from dvsa.generate.dense import image_files
from dvsa.generate.train import load_generator
from dvsa.scripts._args import add_device_arg


def make_encoder(meta: dict, device: str):
    """The region encoder of a feature-store meta (tests replace this with a fake)."""
    return RegionEncoder.from_meta(meta, device=device, progress=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa caption", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="generator checkpoint (dvsa generate train: OUT/model.pt)")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the checkpoint's GenConfig.beam)")
    p.add_argument("--max-len", type=int, default=None, help="most decoding steps (default: the checkpoint's)")
    p.add_argument("--length-norm", type=float, default=None, help="beam ranking exponent (default: the checkpoint's)")
    p.add_argument("--batch", type=int, default=32, help="images per decoding batch")
    add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="do not print the captions")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    try:
        model, vocab, cfg, ck = load_generator(args.checkpoint, device=args.device)
        encoder = make_encoder(ck.get("features") or {}, args.device)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"dvsa caption: {e}", file=sys.stderr)
        return 2
    beam = args.beam if args.beam is not None else cfg.beam
    max_len = args.max_len if args.max_len is not None else cfg.max_len
    length_norm = args.length_norm if args.length_norm is not None else cfg.length_norm
    paths = image_files(args.images)
    if not paths:
        print(f"dvsa caption: no images in {args.images}", file=sys.stderr)
        return 2

    t0 = time.time()
    show = None if args.quiet else (lambda path, text: print(f"{path}\t{text}"))
    results, failed = caption_images(model, vocab, cfg, encoder, paths, beam, max_len, length_norm, args.batch,
                                     on_caption=show)
    out = {"checkpoint": str(args.checkpoint), "beam": beam, "max_len": max_len, "length_norm": length_norm,
           "captions": results, "failed": failed}
    atomic_write_json(args.out, out)
    print(f"{len(results)} captioned, {len(failed)} skipped, {time.time() - t0:.1f} s -> {args.out}", file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
