"""``dvsa bench index``: photo search at scale: FAISS candidates + exact eq. 8 rerank vs exhaustive eq. 8.

    dvsa bench index --n 100000 --regions 8 --dim 128 --queries 50

Synthetic photo embeddings (no model needed). The measuring code is `dvsa.generate.serve.bench`.
With a trained aligner and a store of a split, the same search on real photos: image-search R@k of every
sentence, exhaustive eq. 8 beside the index's candidates + rerank (`dvsa.align.index.search_recall`); with a run
folder whose retrieval stage chose a bank correction, both rank by the corrected score (as its indexes do) and
the plain eq. 8 row is printed beside:

    dvsa bench index --checkpoint runs/f8k --store runs/f8k/features --dataset flickr8k --root DATA --split val
"""
from __future__ import annotations

import sys

from dvsa.align.aligner import Aligner
from dvsa.align.index import search_recall
from dvsa.data.catalog import load_dataset
from dvsa.data.features import FeatureStore
from dvsa.data.records import select_split
from dvsa.generate.serve.bench import bench_index, format_index_table
from dvsa.scripts._args import parser, positive_int


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa bench index", __doc__)
    p.add_argument("--n", type=int, default=100_000, help="photos")
    p.add_argument("--regions", type=int, default=8, help="regions per photo (row 0 = whole image)")
    p.add_argument("--dim", type=int, default=128, help="embedding size H")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--candidates", type=int, default=200, help="FAISS candidates reranked by eq. 8")
    p.add_argument("--ivf-threshold", type=int, default=5_000_000, help="IVF (approximate) instead of a flat index from this many regions")
    p.add_argument("--checkpoint", default=None, help="an alignment checkpoint or run folder: measure on real photos")
    p.add_argument("--store", default=None, help="with --checkpoint: the feature store of the split's images")
    p.add_argument("--dataset", default=None, help="with --checkpoint: the dataset name (dvsa.data.catalog)")
    p.add_argument("--root", default=None, help="with --checkpoint: the dataset root")
    p.add_argument("--split", default="val", help="with --checkpoint: the split whose sentences query its images")
    p.add_argument("--reranked", type=positive_int, default=None,
                   help="with --checkpoint: photos reranked (default the search's own, max(100, 10 k))")
    args = p.parse_args(argv)
    if args.checkpoint:
        if not (args.store and args.dataset and args.root):
            p.error("--checkpoint needs --store, --dataset and --root")
        recs = select_split(load_dataset(args.dataset, args.root), args.split)
        r = search_recall(Aligner.load(args.checkpoint), FeatureStore(args.store), recs, args.k, args.reranked)
        hub = r["hubness"]
        score = f"eq. 8 less the bank correction (beta {hub['beta']:g})" if hub else "eq. 8"
        rows = [f"| exhaustive eq. 8 (no correction) | {100 * r['recall_plain']:.1f} | – | – |"] if hub else []
        print(f"{r['n_images']} images, {r['n_queries']} sentences of split {args.split}; {r['backend']}; "
              f"scores: {score}\n"
              f"| search | R@{r['k']} | top {r['k']} equal to exhaustive | provably exhaustive |\n| --- | --- | --- | --- |\n"
              + "".join(x + "\n" for x in rows) +
              f"| exhaustive | {100 * r['recall_exhaustive']:.1f} | 100% | 100% |\n"
              f"| index (candidates + exact rerank) | {100 * r['recall_index']:.1f} | "
              f"{100 * r['same_top_k']:.1f}% | {100 * r['proven']:.1f}% |\n"
              f"index R@{r['k']} / exhaustive R@{r['k']}: {100 * r['kept']:.1f}%")
        return 0
    r = bench_index(args.n, args.regions, args.dim, args.queries, args.k, args.candidates, args.ivf_threshold,
                    log=lambda m: print(m, file=sys.stderr))
    print(format_index_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
