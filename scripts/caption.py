"""``dvsa caption``: full-frame captions for any images, with a trained generator.

    dvsa caption --checkpoint runs/gen/model.pt --images photos/ more.jpg --out captions.json --beam 7

The image features are computed here by the encoder that made the generator's training features (rebuilt from
the checkpoint's feature meta with `RegionEncoder.from_meta`); only the whole image is encoded (no boxes). The
captions are printed (``path<TAB>caption``) and written to `--out` in COCO's results format (what
`pycocotools.coco.COCO.loadRes` and pycocoevalcap read; `generate.formats.to_coco_results`)::

    [{"image_id": int (the COCO id of a COCO file name, e.g. 000000391895.jpg) | str (file name without
      extension), "caption": str}, ...]

With ``--extras`` every entry also has "file_name", "path", "logprob", "score" (logprob per word) and
"candidates" ([{"caption", "logprob"}] of the beam, best first); loadRes still reads it.

An attention generator (``GenConfig.arch = "attention"``, `generate.attention`) attends over the image's regions,
detected and encoded here; ``--extras`` then adds each word's "attention" ({"word", "row", "box", "weight",
"weights"}) and the regions' "boxes", and ``--attention DIR`` draws one PNG per image in DIR: the image with
each word's most-attended region, the caption below in the regions' colours with the weights.

``--checkpoint`` may be a pipeline run folder (its gen_full/model.pt; with ``--attention``, its
gen_attention/model.pt). A corrupt or unreadable image is reported on stderr and skipped. Exit status 0 when at
least one image was captioned, 1 when none was or the checkpoint is missing or bad, 2 for bad arguments.
"""
from __future__ import annotations

import sys
import time

from dvsa.align.regions.encoder import RegionEncoder
from dvsa.data.errors import CheckpointError, UsageError
from dvsa.generate.captioning import caption_images
from dvsa.generate.consensus import bank_for
from dvsa.generate.dense import image_files
from dvsa.generate.formats import write_coco_results
from dvsa.generate.metrics import format_vocabulary, vocabulary_use
from dvsa.generate.pipeline.run_files import resolve_checkpoint
from dvsa.generate.train import load_generator
from dvsa.scripts._args import (
    add_checkpoint_arg,
    add_device_arg,
    add_images_arg,
    parser,
    positive_int,
)


def make_encoder(meta: dict, device: str):
    """The region encoder of a feature-store meta (tests replace this with a fake)."""
    return RegionEncoder.from_meta(meta, device=device, progress=False)


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa caption", __doc__, quiet="no progress bars, do not print the captions")
    add_checkpoint_arg(p, "caption", help="generator checkpoint (dvsa generate train: OUT/model.pt)")
    add_images_arg(p)
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--beam", type=positive_int, default=None,
                   help="beam size >= 1 (default: the checkpoint's GenConfig.beam)")
    p.add_argument("--max-len", type=positive_int, default=None, help="most decoding steps (default: the checkpoint's)")
    p.add_argument("--length-norm", type=float, default=None, help="beam ranking exponent (default: the checkpoint's)")
    p.add_argument("--prior-weight", type=float, default=None,
                   help="specific captions: each word's log-probability minus this x its image-free one, in [0, 1) "
                        "(0: the plain model; default: GenConfig.prior_weight)")
    p.add_argument("--consensus-k", type=int, default=None,
                   help="re-rank the beam's captions by the captions of the k nearest training images (the bank.pt "
                        "beside the checkpoint; 0: the beam's best; default: GenConfig.consensus_k)")
    p.add_argument("--batch", type=positive_int, default=32, help="images per decoding batch")
    add_device_arg(p)
    p.add_argument("--extras", action="store_true", help="per-image path, logprob, score, beam candidates in --out")
    p.add_argument("--attention", default=None, metavar="DIR",
                   help="attention generators: draw each word's most-attended region, one PNG per image in DIR "
                        "(a run folder as --checkpoint then gives its gen_attention/model.pt)")
    args = p.parse_args(argv)

    # a run folder gives its attention generator when its attention is to be drawn, else its full-frame one
    role = "caption" if args.attention is None else "attention"
    ckpt = resolve_checkpoint(args.checkpoint, role)
    model, vocab, cfg, ck = load_generator(ckpt, device=args.device)
    if args.attention is not None and cfg.arch != "attention":
        raise UsageError(f"--attention: {args.checkpoint} is not an attention generator (arch={cfg.arch!r})")
    try:
        encoder = make_encoder(ck.get("features") or {}, args.device)
    except ValueError as e:  # a feature recipe this machine cannot rebuild
        raise CheckpointError(f"{args.checkpoint}: {e}") from e
    if args.prior_weight is not None:
        if not 0.0 <= args.prior_weight < 1.0:
            raise UsageError(f"--prior-weight must be in [0, 1), got {args.prior_weight}")
        cfg.prior_weight = args.prior_weight  # the model's own config: the decoders read it from there
    if args.consensus_k is not None:
        if args.consensus_k < 0:
            raise UsageError(f"--consensus-k must be >= 0, got {args.consensus_k}")
        cfg.consensus_k = args.consensus_k
    bank = bank_for(ckpt, cfg, model.input_dim)
    beam = args.beam if args.beam is not None else cfg.beam
    max_len = args.max_len if args.max_len is not None else cfg.max_len
    length_norm = args.length_norm if args.length_norm is not None else cfg.length_norm
    paths = image_files(args.images)
    if not paths:
        raise UsageError(f"--images: no images in {' '.join(args.images)}")

    t0 = time.time()
    show = None if args.quiet else (lambda path, text: print(f"{path}\t{text}"))
    results, failed = caption_images(model, vocab, cfg, encoder, paths, beam, max_len, length_norm, args.batch,
                                     on_caption=show, attention_dir=args.attention, bank=bank)
    write_coco_results(args.out, results, extras=args.extras, indent=1)
    print(f"{len(results)} captioned, {len(failed)} skipped, {time.time() - t0:.1f} s -> {args.out}", file=sys.stderr)
    if results:
        print(format_vocabulary(vocabulary_use({str(n): r["caption"] for n, r in enumerate(results)})),
              file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
