"""``dvsa retrieve``: a sentence -> the best images; an image -> the best sentences, with a trained alignment model.

    dvsa retrieve --checkpoint runs/align/model.pt --store runs/features --dataset flickr8k \
        --root ../shared/datasets/flickr8k --sentence "a dog runs on the grass" --k 5
    dvsa retrieve ... --image 1000268201_693b08cb0e --k 5 --out top.json

Candidates are the images (or their sentences) of `--split` that are in the store ("all": every split).
Scores are eq. 8 (or the checkpoint's score). Prints a table and writes JSON with --out.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dvsa.align.examples import images_for_sentence, sentences_for_image
from dvsa.align.loading import load_records
from dvsa.align.train import load_alignment
from dvsa.data.errors import DvsaError, UsageError
from dvsa.data.features import FeatureStore
from dvsa.generate.pipeline.run_files import resolve_checkpoint
from dvsa.scripts import search
from dvsa.scripts._args import (
    add_checkpoint_data_args,
    add_device_arg,
    parser,
    positive_int,
)


def main(argv: list[str] | None = None) -> int:
    if "--index" in (sys.argv[1:] if argv is None else argv):  # a photo index (dvsa index): scripts/search.py
        return search.main(argv)
    p = parser("dvsa retrieve", __doc__)
    add_checkpoint_data_args(p, "test", "candidates: train | val | test | all (default test)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--sentence", help="query sentence -> top images")
    q.add_argument("--image", help="query image id (in the store) -> top sentences")
    p.add_argument("--k", type=positive_int, default=5, help="how many results (5)")
    add_device_arg(p)
    p.add_argument("--out", default=None, help="results JSON")
    args = p.parse_args(argv)

    model, vocab, cfg = load_alignment(resolve_checkpoint(args.checkpoint, "align"), device=args.device)
    records = load_records(args.dataset, args.root, args.split, args.dataset_arg)
    store = FeatureStore(args.store)
    try:
        if args.sentence is not None:
            query, results = images_for_sentence(model, vocab, store, records, args.sentence, args.k, args.device,
                                                 args.split)
        else:
            query, results = sentences_for_image(model, vocab, store, records, args.image, args.k, cfg.max_words,
                                                 args.device, args.split)
    except DvsaError:
        raise
    except ValueError as e:  # a query the split cannot answer (no words, an image not in the store)
        raise UsageError(f"{'--sentence' if args.sentence is not None else '--image'}: {e}") from e
    _print(query, results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"query": query, "split": args.split, "results": results}, indent=2))
    return 0


def _print(query: dict, results: list[dict]) -> None:
    if "sentence" in query:
        print(f"sentence: {query['sentence']!r}" + (f" (unknown words: {query['unknown']})" if query["unknown"] else ""))
        print(f"{'rank':>4}  {'score':>9}  image")
        for r in results:
            print(f"{r['rank']:>4}  {r['score']:>9.3f}  {r['image_id']}")
    else:
        print(f"image: {query['image']}")
        print(f"{'rank':>4}  {'score':>9}  {'':1}  sentence (image)")
        for r in results:
            mark = "*" if r["correct"] else " "
            print(f"{r['rank']:>4}  {r['score']:>9.3f}  {mark}  {r['text']} ({r['image_id']})")


if __name__ == "__main__":
    sys.exit(main())
