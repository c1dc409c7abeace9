"""``dvsa bench decode``: captions per second of beam search, batched over images vs one image at a time.

    dvsa bench decode --images 64 --beams 1 3 7

An untrained `CaptionModel` of the default size (GenConfig: hidden 512, embed 512) with a Flickr8k-sized
vocabulary decodes random features; untrained captions rarely end early, so nearly every caption runs the full
`--max-len` steps (the slow case). Columns: the batched `beam_search` on all images at once; the same function
called on one image at a time; and the plain-Python twin `beam_search_single` (one hypothesis per model step)
on a few images. Timings on a shared CPU vary from run to run; compare columns of one run.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from dvsa.generate.decode import beam_search, beam_search_single
from dvsa.generate.model import CaptionModel, GenConfig


def _rate(fn, n_images: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def main(argv: list[str] | None = None) -> int:
    d = GenConfig()
    p = argparse.ArgumentParser(prog="dvsa bench decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64, help="images decoded per measurement")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3, 7])
    p.add_argument("--vocab", type=int, default=2538, help="vocabulary size (Flickr8k: 2538)")
    p.add_argument("--feat-dim", type=int, default=1280, help="feature size D (EfficientNet-Lite0: 1280)")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--embed", type=int, default=d.embed)
    p.add_argument("--cell", default=d.cell, choices=("rnn", "lstm"))
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--single-images", type=int, default=4, help="images for the plain-Python twin (0 skips it)")
    p.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg = GenConfig(cell=args.cell, hidden=args.hidden, embed=args.embed, dropout=0.0)
    model = CaptionModel(cfg, args.vocab, args.feat_dim).to(dev).eval()
    feats = torch.randn(args.images, args.feat_dim, device=dev).abs()  # CNN features are >= 0 (ReLU / swish)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()
        return run

    print(f"decode benchmark: {args.cell}, hidden {args.hidden}, vocab {args.vocab}, D {args.feat_dim}, "
          f"max_len {args.max_len}, {args.images} images, device {dev}, torch threads {torch.get_num_threads()}")
    head = (f"{'beam':>4} | {'batched img/s':>13} | {'one-by-one img/s':>16} | {'speed-up':>8} | "
            f"{'python twin img/s':>17}")
    print(head)
    print("-" * len(head))
    for k in args.beams:
        beam_search(model, feats[:2], k, args.max_len)  # warm-up
        batched = _rate(timed(lambda: beam_search(model, feats, k, args.max_len)), args.images, args.repeat)
        one = _rate(timed(lambda: [beam_search(model, feats[i : i + 1], k, args.max_len) for i in range(len(feats))]),
                    args.images, args.repeat)
        n1 = min(args.single_images, args.images)
        twin = (_rate(timed(lambda: [beam_search_single(model, feats[i], k, args.max_len) for i in range(n1)]), n1, 1)
                if n1 else float("nan"))
        print(f"{k:>4} | {batched:>13.1f} | {one:>16.1f} | {batched / one:>7.1f}x | {twin:>17.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
