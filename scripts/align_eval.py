"""``dvsa align eval``: image-sentence retrieval metrics of a trained alignment model.

    dvsa align eval --checkpoint runs/align/model.pt --store runs/features --dataset flickr8k \
        --root ../shared/datasets/flickr8k --split test --protocol 1k --out runs/align/test_metrics.json

Image annotation (image -> its sentences: rank of the first correct among all) and image search (sentence ->
its image): R@1, R@5, R@10, median rank. Protocols: 1k (first 1000 images: Flickr), 5k (COCO 5K), coco1k
(average of five 1000-image folds), all. Prints a table and writes the metrics as JSON.

Bank correction (`align.hubness`): with a pipeline run folder as ``--checkpoint``, the scores are corrected by the
same bank of train images at the beta its retrieval stage chose, and the model's own (eq. 8) ranking is printed
beside; ``--bank-beta B`` corrects with ``--bank-images`` train images of the dataset at B instead, ``--no-bank``
ranks by eq. 8 alone.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dvsa.align.aligner import run_bank
from dvsa.align.hubness import HubnessConfig, bank_records
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
    positive_float,
    positive_int,
)


def open_bank(args, store) -> tuple[list | None, tuple, int, str]:
    """(bank records or None, (annotation beta, search beta), sentences per bank image, where they came from)
    for the flags (module doc)."""
    if args.no_bank:
        return None, (None, None), 0, ""
    if args.bank_beta is not None:
        train = load_records(args.dataset, args.root, "train", args.dataset_arg)
        return (bank_records(train, store, args.bank_images), (args.bank_beta, args.bank_beta),
                HubnessConfig.sentences_per_image, "--bank-beta")
    run = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else None
    found = run_bank(run)
    if found is None:
        return None, (None, None), 0, ""
    ids, beta, per_image = found
    by_id = {r.id: r for r in load_records(args.dataset, args.root, "train", args.dataset_arg)}
    bank = [by_id[i] for i in ids if i in by_id and i in store]
    if len(bank) < len(ids):
        print(f"warning: {len(ids) - len(bank)} of the run's {len(ids)} bank images are not in the dataset or the "
              "store", file=sys.stderr)
    return (bank or None), beta, per_image, f"the run's retrieval stage, {run}"


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align eval", __doc__)
    add_checkpoint_data_args(p, "test", "val | test (default test)")
    p.add_argument("--protocol", default=PipelineConfig.retrieval_protocol, choices=PROTOCOLS, help="default 1k")
    p.add_argument("--sentences-per-image", type=positive_int, default=5, help="first N sentences of each image (5)")
    p.add_argument("--score", default=None, choices=("max", "defrag"), help="override the checkpoint's score")
    p.add_argument("--bank-beta", type=positive_float, default=None,
                   help="correct the scores with a bank of train images at this beta (default: a run folder's own)")
    p.add_argument("--bank-images", type=positive_int, default=HubnessConfig.images,
                   help=f"train images in the bank with --bank-beta (default {HubnessConfig.images})")
    p.add_argument("--no-bank", action="store_true", help="rank by the model's eq. 8 scores alone")
    add_device_arg(p)
    p.add_argument("--out", default=None, help="metrics JSON")
    args = p.parse_args(argv)

    checkpoint = resolve_checkpoint(args.checkpoint, "align")
    model, vocab, cfg = load_alignment(checkpoint, device=args.device)
    records = load_records(args.dataset, args.root, args.split, args.dataset_arg)
    store = FeatureStore(args.store)
    bank, beta, per_image, how = open_bank(args, store)
    try:
        m = evaluate_retrieval(model, store, records, vocab, protocol=args.protocol,
                               sentences_per_image=args.sentences_per_image, kind=args.score, device=args.device,
                               bank=bank, bank_sentences=per_image, betas=(beta,))
    except DvsaError:
        raise
    except ValueError as e:  # a split the protocol cannot take, no image of it in the store
        raise DvsaError(f"{args.dataset} {args.split}: {e}") from e
    m.update(checkpoint=str(checkpoint), split=args.split, score=args.score or cfg.score)
    print(f"{args.dataset} {args.split}, protocol {args.protocol}: {m['n_folds']} fold(s) of {m['n_images']} images, "
          f"{m['n_sentences']} sentences" + (f"; {m['missing_images']} images not in the store" if m["missing_images"] else ""))
    if bank is not None:
        print(f"bank-corrected ({len(bank)} train images, beta {beta[0]} / {beta[1]} annotation / search, {how}):")
        print(metrics_table(m))
        print("the model's eq. 8 scores alone:")
        print(metrics_table(m["plain"]))
    else:
        print(metrics_table(m))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
