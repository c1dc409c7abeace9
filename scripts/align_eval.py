"""``dvsa align eval``: image-sentence retrieval metrics of a trained alignment model.

    dvsa align eval --checkpoint runs/align/model.pt --store runs/features --dataset flickr8k \
        --root ../shared/datasets/flickr8k --split test --protocol 1k --out runs/align/test_metrics.json

Image annotation (image -> its sentences: rank of the first correct among all) and image search (sentence ->
its image): R@1, R@5, R@10, median rank. Protocols: 1k (first 1000 images: Flickr), 5k (COCO 5K), coco1k
(average of five 1000-image folds), all. Prints a table and writes the metrics as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dvsa.align.loading import load_records
from dvsa.align.retrieval import PROTOCOLS, evaluate_retrieval, metrics_table
from dvsa.align.train import load_alignment
from dvsa.data.errors import DvsaError
from dvsa.data.features import FeatureStore
from dvsa.generate.pipeline import PipelineConfig
from dvsa.generate.pipeline.run_files import resolve_checkpoint
from dvsa.scripts._args import (
    add_checkpoint_data_args,
    add_device_arg,
    parser,
    positive_int,
)


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align eval", __doc__)
    add_checkpoint_data_args(p, "test", "val | test (default test)")
    p.add_argument("--protocol", default=PipelineConfig.retrieval_protocol, choices=PROTOCOLS, help="default 1k")
    p.add_argument("--sentences-per-image", type=positive_int, default=5, help="first N sentences of each image (5)")
    p.add_argument("--score", default=None, choices=("max", "defrag"), help="override the checkpoint's score")
    add_device_arg(p)
    p.add_argument("--out", default=None, help="metrics JSON")
    args = p.parse_args(argv)

    checkpoint = resolve_checkpoint(args.checkpoint, "align")
    model, vocab, cfg = load_alignment(checkpoint, device=args.device)
    records = load_records(args.dataset, args.root, args.split, args.dataset_arg)
    store = FeatureStore(args.store)
    try:
        m = evaluate_retrieval(model, store, records, vocab, protocol=args.protocol,
                               sentences_per_image=args.sentences_per_image, kind=args.score, device=args.device)
    except DvsaError:
        raise
    except ValueError as e:  # a split the protocol cannot take, no image of it in the store
        raise DvsaError(f"{args.dataset} {args.split}: {e}") from e
    m.update(checkpoint=str(checkpoint), split=args.split, score=args.score or cfg.score)
    print(f"{args.dataset} {args.split}, protocol {args.protocol}: {m['n_folds']} fold(s) of {m['n_images']} images, "
          f"{m['n_sentences']} sentences" + (f"; {m['missing_images']} images not in the store" if m["missing_images"] else ""))
    print(metrics_table(m))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
