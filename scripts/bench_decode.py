"""``dvsa bench decode``: captions per second of beam search, batched over images vs one image at a time.

    dvsa bench decode --images 64 --beams 1 3 7

An untrained `CaptionModel` of the default size (GenConfig: hidden 512, embed 512) with a Flickr8k-sized
vocabulary decodes random features; untrained captions rarely end early, so nearly every caption runs the full
`--max-len` steps (the slow case). Columns: the batched `beam_search` on all images at once; the same function
called on one image at a time; and the plain-Python twin `beam_search_single` (one hypothesis per model step)
on a few images. Timings on a shared CPU vary from run to run; compare columns of one run.
The measuring code is `dvsa.generate.bench`.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from dvsa.generate.bench import DecodeBenchConfig, bench_decode, format_decode_table


def main(argv: list[str] | None = None) -> int:
    d = DecodeBenchConfig()
    p = argparse.ArgumentParser(prog="dvsa bench decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=d.images, help="images decoded per measurement")
    p.add_argument("--beams", type=int, nargs="+", default=d.beams)
    p.add_argument("--vocab", type=int, default=d.vocab, help="vocabulary size (Flickr8k: 2538)")
    p.add_argument("--feat-dim", type=int, default=d.feat_dim, help="feature size D (EfficientNet-Lite0: 1280)")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--embed", type=int, default=d.embed)
    p.add_argument("--cell", default=d.cell, choices=("rnn", "lstm"))
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--single-images", type=int, default=d.single_images,
                   help="images for the plain-Python twin (0 skips it)")
    p.add_argument("--repeat", type=int, default=d.repeat, help="best of this many runs")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default: torch's)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    cfg = DecodeBenchConfig(**{f.name: getattr(args, f.name) for f in fields(DecodeBenchConfig)})
    print(format_decode_table(bench_decode(cfg), cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
