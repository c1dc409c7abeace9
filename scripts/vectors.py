"""``dvsa vectors``: word vectors for a dataset's vocabulary, from a word2vec file or trained here.

    dvsa vectors --dataset flickr8k --root ../shared/datasets/flickr8k --word2vec GoogleNews-vectors-negative300.bin \\
        --out runs/f8k/vectors.npy
    dvsa vectors --dataset flickr8k --root ../shared/datasets/flickr8k --train --out runs/f8k/vectors.npy

The vocabulary is built from the training split (min count `--min-count`, 5 as in the paper). Writes the
matrix float32 [V, D] to `--out` and its vocabulary, coverage and resolved config to the same name with .json.
Prints the coverage (vocabulary words that have a vector). The work is `dvsa.data.vectors.make_vectors`.
"""
from __future__ import annotations

import sys
from dataclasses import fields

from dvsa.data.catalog import available
from dvsa.data.vectors import VectorsConfig, make_vectors
from dvsa.scripts._args import add_seed_arg, nonneg_float, parser, positive_int


def build_parser():
    d = VectorsConfig()
    p = parser("dvsa vectors", __doc__)
    p.add_argument("--dataset", required=True, help=f"reader name: {', '.join(available())}")
    p.add_argument("--root", required=True, help="dataset root (file or folder, as the reader takes it)")
    p.add_argument("--split", default="train", help="split whose sentences build the vocabulary (and train)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--word2vec", help="word2vec file, binary (.bin) or text")
    src.add_argument("--train", action="store_true", help="train Word2Vec on the split's sentences")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--binary", dest="binary", action="store_true", default=d.binary, help="binary format")
    fmt.add_argument("--text", dest="binary", action="store_false", help="text format")
    p.add_argument("--limit", type=positive_int, default=d.limit, help="read only the first N vectors of the file")
    p.add_argument("--dim", type=positive_int, default=d.dim, help="trained vector size")
    p.add_argument("--window", type=positive_int, default=d.window)
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    add_seed_arg(p, d.seed)
    p.add_argument("--std", type=nonneg_float, default=d.std, help="std of random rows (default: that of found rows)")
    p.add_argument("--min-count", type=positive_int, default=d.min_count, help="vocabulary threshold")
    p.add_argument("--out", required=True, help="output .npy (a .json with the vocabulary goes beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = {f.name for f in fields(VectorsConfig)}
    cfg = VectorsConfig(**{k: v for k, v in vars(args).items() if k in names})
    res = make_vectors(args.dataset, args.root, args.out, cfg, args.split)
    vocab, mat, cov = res["vocab"], res["matrix"], res["coverage"]
    print(f"vocabulary: {len(vocab)} words ({len(vocab) - 4} + 4 specials) from {res['sentences']} {args.split} "
          f"sentences; vectors: {mat.shape[1]}-d")
    print(f"coverage: {cov['found']}/{cov['total']} words have a vector ({100 * cov['fraction']:.1f}%)")
    if cov["missing"] and not args.quiet:
        print(f"missing (random rows), e.g.: {' '.join(cov['missing'][:20])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
