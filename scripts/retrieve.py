"""``dvsa retrieve``: a sentence -> the best images; an image -> the best sentences, with a trained alignment model.

    dvsa retrieve --checkpoint runs/align/model.pt --store runs/features --dataset flickr8k \
        --root ../shared/datasets/flickr8k --sentence "a dog runs on the grass" --k 5
    dvsa retrieve ... --image 1000268201_693b08cb0e --k 5 --out top.json

Candidates are the images (or their sentences) of `--split` that are in the store ("all": every split).
Scores are eq. 8 (or the checkpoint's score). Prints a table and writes JSON with --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa retrieve", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="model.pt from dvsa align train")
    p.add_argument("--store", required=True, help="feature store folder")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog")
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE", help="reader keyword")
    p.add_argument("--split", default="test", help="candidates: train | val | test | all (default test)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--sentence", help="query sentence -> top images")
    q.add_argument("--image", help="query image id (in the store) -> top sentences")
    p.add_argument("--k", type=int, default=5, help="how many results (5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="results JSON")
    args = p.parse_args(argv)

    import torch
    from dvsa.align.retrieval import eval_items, score_collection
    from dvsa.align.train import load_alignment
    from dvsa.data.catalog import load_dataset
    from dvsa.data.features import FeatureStore
    from dvsa.data.records import DataError, select_split
    from dvsa.data.text import tokenize
    from dvsa.scripts.align_train import dataset_kwargs

    try:
        model, vocab, cfg = load_alignment(args.checkpoint, device=args.device)
        records = load_dataset(args.dataset, args.root, **dataset_kwargs(args.dataset_arg))
        records = records if args.split == "all" else select_split(records, args.split)
        store = FeatureStore(args.store)
        if args.sentence is not None:
            tokens = tokenize(args.sentence)
            if not tokens:
                raise ValueError("the sentence has no words")
            ids = [r.id for r in records if r.id in store]
            if not ids:
                raise ValueError(f"no image of split {args.split!r} is in the store")
            scores = score_collection(model, store, ids, [vocab.encode(tokens)], device=args.device)[:, 0]
            top = torch.argsort(scores, descending=True)[: args.k].tolist()
            by_id = {r.id: r for r in records}
            results = [{"rank": n + 1, "image_id": ids[i], "score": float(scores[i]), "path": by_id[ids[i]].path}
                       for n, i in enumerate(top)]
            query = {"sentence": args.sentence, "tokens": tokens,
                     "unknown": [t for t in tokens if t not in vocab]}
        else:
            if args.image not in store:
                raise ValueError(f"image {args.image!r} is not in the store {args.store}")
            ids, toks, owner, sids = eval_items(records, store, vocab, None, cfg.max_words)
            if not toks:
                raise ValueError(f"no sentence of split {args.split!r} has its image in the store")
            scores = score_collection(model, store, [args.image], toks, device=args.device)[0]
            top = torch.argsort(scores, descending=True)[: args.k].tolist()
            raw = {s.id: s.raw for r in records for s in r.sentences}
            results = [{"rank": n + 1, "sentence_id": sids[j], "image_id": ids[owner[j]], "score": float(scores[j]),
                        "text": raw[sids[j]], "correct": ids[owner[j]] == args.image} for n, j in enumerate(top)]
            query = {"image": args.image}
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"dvsa retrieve: {e}", file=sys.stderr)
        return 1
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
