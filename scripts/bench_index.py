"""``dvsa bench index``: photo search at scale: FAISS candidates + exact eq. 8 rerank vs exhaustive eq. 8.

    dvsa bench index --n 100000 --regions 8 --dim 128 --queries 50

Synthetic photo embeddings (no model needed). The measuring code is `dvsa.generate.serve.bench`.
"""
from __future__ import annotations

import sys

from dvsa.generate.serve.bench import bench_index, format_index_table
from dvsa.scripts._args import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa bench index", __doc__)
    p.add_argument("--n", type=int, default=100_000, help="photos")
    p.add_argument("--regions", type=int, default=8, help="regions per photo (row 0 = whole image)")
    p.add_argument("--dim", type=int, default=128, help="embedding size H")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--candidates", type=int, default=200, help="FAISS candidates reranked by eq. 8")
    p.add_argument("--ivf-threshold", type=int, default=200_000, help="IVF instead of a flat index from this N")
    args = p.parse_args(argv)
    r = bench_index(args.n, args.regions, args.dim, args.queries, args.k, args.candidates, args.ivf_threshold,
                    log=lambda m: print(m, file=sys.stderr))
    print(format_index_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
