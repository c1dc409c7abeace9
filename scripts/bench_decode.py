"""``dvsa bench decode``: captions per second of beam search, batched over images vs one image at a time.

    dvsa bench decode --n-images 64 --beams 1 3 7

An untrained `CaptionModel` of the default size (GenConfig: hidden 512, embed 512) with a Flickr8k-sized
vocabulary decodes random features; untrained captions rarely end early, so nearly every caption runs the full
`--max-len` steps (the slow case). Columns: the batched `beam_search` on all images at once; the same function
called on one image at a time; and the plain-Python twin `beam_search_single` (one hypothesis per model step)
on a few images. Timings on a shared CPU vary from run to run; compare columns of one run.
The measuring code is `dvsa.generate.bench`.
"""
from __future__ import annotations

import sys
from dataclasses import fields

from dvsa.generate.bench import DecodeBenchConfig, bench_decode, format_decode_table
from dvsa.scripts._args import add_device_arg, nonneg_int, parser, positive_int


def main(argv: list[str] | None = None) -> int:
    d = DecodeBenchConfig()
    p = parser("dvsa bench decode", __doc__)
    p.add_argument("--n-images", dest="images", type=positive_int, default=d.images,
                   help="images decoded per measurement")
    p.add_argument("--beams", type=positive_int, nargs="+", default=d.beams, help="beam sizes (each >= 1)")
    p.add_argument("--vocab", type=positive_int, default=d.vocab, help="vocabulary size (Flickr8k: 2538)")
    p.add_argument("--feat-dim", type=positive_int, default=d.feat_dim,
                   help="feature size D (EfficientNet-Lite0: 1280)")
    p.add_argument("--hidden", type=positive_int, default=d.hidden)
    p.add_argument("--embed", type=positive_int, default=d.embed)
    p.add_argument("--cell", default=d.cell, choices=("rnn", "lstm"))
    p.add_argument("--max-len", type=positive_int, default=d.max_len)
    p.add_argument("--single-images", type=nonneg_int, default=d.single_images,
                   help="images for the plain-Python twin (0 skips it)")
    p.add_argument("--repeat", type=positive_int, default=d.repeat, help="best of this many runs")
    add_device_arg(p, d.device)
    p.add_argument("--threads", type=nonneg_int, default=d.threads, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)

    cfg = DecodeBenchConfig(**{f.name: getattr(args, f.name) for f in fields(DecodeBenchConfig)})
    print(format_decode_table(bench_decode(cfg), cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
