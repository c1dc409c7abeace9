"""Ranked retrieval examples with a trained alignment model: the best images for a sentence, the best sentences
for an image, and the few ranked examples of a fold that the pipeline's report shows."""
from __future__ import annotations

from collections.abc import Callable

import torch
from dvsa.align.retrieval import eval_items, score_collection
from dvsa.data.text import tokenize


def retrieval_examples(records, scores, sent_img, sents, n: int,
                       image_path: Callable = lambda rec: rec.path, search_scores=None) -> dict:
    """Top-5 sentences of the first n images and top-3 images of n sentences (one per image).

    records: the fold's images; scores float [images, sentences]; sent_img[j] the index of sentence j's image;
    sents the Sentence objects; image_path(record) the file shown for an image; search_scores float [images,
    sentences]: the images of a sentence ranked by these instead (`align.hubness`).
    """
    search_scores = scores if search_scores is None else search_scores
    ann = []
    for k in range(min(n, len(records))):
        top = torch.argsort(scores[k], descending=True)[:5].tolist()
        ann.append({"image_id": records[k].id, "path": image_path(records[k]),
                    "top": [{"text": sents[j].raw, "correct": int(sent_img[j]) == k} for j in top]})
    search, seen = [], set()
    for j in range(len(sents)):
        k = int(sent_img[j])
        if k in seen:
            continue
        seen.add(k)
        top = torch.argsort(search_scores[:, j], descending=True)[:3].tolist()
        search.append({"text": sents[j].raw, "truth": records[k].id,
                       "top": [{"image_id": records[i].id, "path": image_path(records[i]),
                                "correct": i == k} for i in top]})
        if len(search) >= n:
            break
    return {"annotation": ann, "search": search}


def images_for_sentence(model, vocab, store, records, sentence: str, k: int, device: str = "cpu",
                        split: str = "") -> tuple[dict, list[dict]]:
    """(query, results): the `k` images of `records` in the store that score best with `sentence` (eq. 8)."""
    tokens = tokenize(sentence)
    if not tokens:
        raise ValueError("the sentence has no words")
    ids = [r.id for r in records if r.id in store]
    if not ids:
        raise ValueError(f"no image of split {split!r} is in the store")
    scores = score_collection(model, store, ids, [vocab.encode(tokens)], device=device)[:, 0]
    top = torch.argsort(scores, descending=True)[:k].tolist()
    by_id = {r.id: r for r in records}
    results = [{"rank": n + 1, "image_id": ids[i], "score": float(scores[i]), "path": by_id[ids[i]].path}
               for n, i in enumerate(top)]
    query = {"sentence": sentence, "tokens": tokens, "unknown": [t for t in tokens if t not in vocab]}
    return query, results


def sentences_for_image(model, vocab, store, records, image_id: str, k: int, max_words: int, device: str = "cpu",
                        split: str = "") -> tuple[dict, list[dict]]:
    """(query, results): the `k` sentences of `records` (whose image is in the store) that score best with
    the image `image_id`; "correct" marks the image's own sentences."""
    if image_id not in store:
        raise ValueError(f"image {image_id!r} is not in the store {store.path}")
    ids, toks, owner, sids = eval_items(records, store, vocab, None, max_words)
    if not toks:
        raise ValueError(f"no sentence of split {split!r} has its image in the store")
    scores = score_collection(model, store, [image_id], toks, device=device)[0]
    top = torch.argsort(scores, descending=True)[:k].tolist()
    raw = {s.id: s.raw for r in records for s in r.sentences}
    results = [{"rank": n + 1, "sentence_id": sids[j], "image_id": ids[owner[j]], "score": float(scores[j]),
                "text": raw[sids[j]], "correct": ids[owner[j]] == image_id} for n, j in enumerate(top)]
    return {"image": image_id}, results
