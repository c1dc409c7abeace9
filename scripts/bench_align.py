"""``dvsa bench align``: speed of stage 1 on this machine.

    dvsa bench align                       # 1,000 images x 5,000 sentences, 20 regions, ~12 words, h = 1000
    dvsa bench align --n-images 100 --sentences 500 --train-steps 3 --out bench.json

Measures (1) the machine's matmul rate (GFLOP/s, a large float32 matmul, best of a few, before and after the
scoring: the floor uses their mean, as the load of a shared machine changes); (2) scoring every
image against every sentence (eq. 8, chunked, from embeddings) against the floor set by its multiply-adds at
that rate: 2 * (images * regions) * (real words) * h FLOP; (3) the same scores one image at a time (the loop a
naive implementation would run); (4) training pairs/s (forward + backward + SGD step, batches of 100 pairs,
the default AlignConfig model). Prints a table with the load conditions (load average, threads) and writes JSON.
The measuring code is `dvsa.align.bench`.
"""
from __future__ import annotations

import json
import sys
from dataclasses import fields

from dvsa.align.bench import AlignBenchConfig, bench_align, format_align_table
from dvsa.scripts._args import nonneg_int, parser, positive_int


def main(argv: list[str] | None = None) -> int:
    d = AlignBenchConfig()
    p = parser("dvsa bench align", __doc__)
    p.add_argument("--n-images", dest="images", type=positive_int, default=d.images, help="images scored")
    p.add_argument("--sentences", type=positive_int, default=d.sentences)
    p.add_argument("--regions", type=positive_int, default=d.regions)
    p.add_argument("--words", type=positive_int, default=d.words,
                   help="mean words per sentence (lengths 8..16 around it)")
    p.add_argument("--embed", type=positive_int, default=d.embed, help="h")
    p.add_argument("--feat-dim", type=positive_int, default=d.feat_dim, help="D for the training benchmark")
    p.add_argument("--train-steps", type=nonneg_int, default=d.train_steps, help="training steps to time (0 = skip)")
    p.add_argument("--batch", type=positive_int, default=d.batch, help="pairs per training batch")
    p.add_argument("--loop-images", type=nonneg_int, default=d.loop_images,
                   help="images scored one at a time (extrapolated)")
    p.add_argument("--repeats", type=positive_int, default=d.repeats, help="scoring runs (best is kept)")
    p.add_argument("--matmul-size", type=positive_int, default=d.matmul_size,
                   help="n of the n x n matmul that measures GFLOP/s")
    p.add_argument("--threads", type=nonneg_int, default=d.threads, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=None, help="results JSON")
    args = p.parse_args(argv)

    res = bench_align(AlignBenchConfig(**{f.name: getattr(args, f.name) for f in fields(AlignBenchConfig)}))
    print(format_align_table(res))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
