"""Stage-1 bodies of the pipeline: features, alignment training, retrieval, MRF snippets, alignment evaluation.

Each ``fn(run) -> dict`` writes its outputs under ``run.out`` and returns a JSON-able result (see
`scripts.pipeline_stages`). The work is done by the library (`align.*`, `data.*`); this module only wires it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields

import numpy as np
import torch

from data.text import PAD_ID, UNK_ID


def _dataclass_with(cls, overrides: dict, **defaults):
    """cls(**defaults, **overrides), naming the bad key when an override is not a field of cls."""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise SystemExit(f"--config: {cls.__name__} has no field(s) {bad}; fields: {sorted(names)}")
    return cls(**{**{k: v for k, v in defaults.items() if k in names}, **overrides})


def region_config(run):
    from align.regions import RegionConfig

    return _dataclass_with(RegionConfig, run.cfg.region, device=run.cfg.device)


# ------------------------------------------------------------------------------------------ features
def features(run) -> dict:
    """Regions + CNN features of the train and eval images in one store, ``out/features`` (resumable)."""
    from align.regions.extract import extract_features

    cfg = region_config(run)
    records = _unique(run.train + run.eval)
    store = extract_features(records, run.out / "features", cfg)
    failed = store.failed()
    for f in failed:
        run.log(f"  skipped image {f['id']} ({f['path']}): {f['reason']}")
    counts = [len(store.regions(i)[0]) for i in store.ids[:500]]
    return {"config": asdict(cfg), "n_images": len(store), "n_failed": len(failed), "dim": store.dim,
            "mean_regions": float(np.mean(counts)) if counts else 0.0}


def region_features(run) -> dict:
    """Features of the ground-truth region boxes of the eval images (for region captioning), ``out/features_gt``."""
    from align.regions.extract import extract_features

    cfg = region_config(run)
    recs = [r for r in run.eval if any(g.text for g in r.regions)]
    given = {r.id: np.array([g.box for g in r.regions], np.float32) for r in recs}
    store = extract_features(recs, run.out / "features_gt", cfg, given_boxes=given)
    return {"n_images": len(store), "n_regions": int(sum(len(v) for v in given.values()))}


def _unique(records):
    seen, out = set(), []
    for r in records:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


# ------------------------------------------------------------------------------------------ alignment model
def align_train(run) -> dict:
    """Train the alignment model on the train split; the val/test split of the store is not touched."""
    from align.model import AlignConfig
    from align.train import train_alignment

    cfg = _dataclass_with(AlignConfig, run.cfg.align, seed=run.cfg.seed)
    out = run.out / "align"
    out.mkdir(parents=True, exist_ok=True)
    summary = train_alignment(run.usable(run.train), run.store(), out, cfg, device=run.cfg.device, log=run.log)
    return {"config": asdict(cfg), "checkpoint": str(out / "model.pt"), "train": _plain(summary)}


def load_alignment(run):
    from align.train import load_alignment as load

    model, vocab, cfg = load(run.out / "align" / "model.pt")
    return model.eval(), vocab, cfg


def encode_sentences(vocab, token_lists, max_words: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens long [S, T] (PAD 0), lengths long [S] >= 1 (an empty sentence becomes one UNK)."""
    ids = [vocab.encode(t)[:max_words] or [UNK_ID] for t in token_lists]
    t = max(len(i) for i in ids)
    tokens = torch.full((len(ids), t), PAD_ID, dtype=torch.long)
    for n, i in enumerate(ids):
        tokens[n, : len(i)] = torch.tensor(i)
    return tokens, torch.tensor([len(i) for i in ids])


@torch.inference_mode()
def score_images_sentences(model, vocab, cfg, store, records) -> tuple[torch.Tensor, list, list]:
    """S_kl for every image k and sentence l of `records`: (scores float [N_img, N_sent], sentence->image [N_sent],
    flat list of sentences)."""
    from align.scores import image_sentence_scores

    feats, _, rmask = store.padded([r.id for r in records])
    v = model.embed_regions(torch.from_numpy(feats))  # [B, R, H]
    sents = [(k, s) for k, r in enumerate(records) for s in r.sentences]
    tokens, lengths = encode_sentences(vocab, [s.tokens for _, s in sents], getattr(cfg, "max_words", 40))
    s = model.embed_words(tokens, lengths)  # [S, T, H]
    wmask = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
    scores = image_sentence_scores(v, torch.from_numpy(rmask), s, wmask, kind=getattr(cfg, "score", "max"))
    return scores.float(), torch.tensor([k for k, _ in sents]), [s for _, s in sents]


def retrieval(run) -> dict:
    """Image annotation and image search on the eval split, in folds of `fold_size` images (1K protocol),
    recalls averaged over folds. Also keeps a few ranked examples for the report."""
    from align.retrieval import retrieval_metrics

    model, vocab, cfg = load_alignment(run)
    records = run.usable(run.eval)
    size = run.cfg.fold_size
    folds = [records[i : i + size] for i in range(0, len(records), size)]
    if len(folds) > 1 and len(folds[-1]) < size:  # a short last fold would be an easier protocol
        folds = folds[:-1]
    per_fold, examples = [], {}
    for n, fold in enumerate(folds):
        scores, sent_img, sents = score_images_sentences(model, vocab, cfg, run.store(), fold)
        per_fold.append(retrieval_metrics(scores, sent_img))
        if n == 0:
            examples = _examples(run, fold, scores, sent_img, sents, run.cfg.show_images)
    metrics = {d: {k: float(np.mean([m[d][k] for m in per_fold])) for k in per_fold[0][d]}
               for d in ("annotation", "search")}
    (run.out / "retrieval_examples.json").write_text(json.dumps(examples))
    return {"metrics": metrics, "n_folds": len(folds), "fold_images": len(folds[0])}


def _examples(run, records, scores, sent_img, sents, n) -> dict:
    ann = []
    for k in range(min(n, len(records))):
        top = torch.argsort(scores[k], descending=True)[:5].tolist()
        ann.append({"image_id": records[k].id, "path": run.image_path(records[k]),
                    "top": [{"text": sents[j].raw, "correct": int(sent_img[j]) == k} for j in top]})
    search = []
    for j in range(0, min(len(sents), 5 * n), 5)[:n]:
        top = torch.argsort(scores[:, j], descending=True)[:3].tolist()
        search.append({"text": sents[j].raw, "truth": records[int(sent_img[j])].id,
                       "top": [{"image_id": records[k].id, "path": run.image_path(records[k]),
                                "correct": k == int(sent_img[j])} for k in top]})
    return {"annotation": ann, "search": search}


# ------------------------------------------------------------------------------------------ snippets and grounding
def snippets(run) -> dict:
    """MRF snippets of the train split; beta calibrated (SnippetConfig.target_len) on a sample of it."""
    from align.snippets import SnippetConfig, write_snippets

    cfg = _dataclass_with(SnippetConfig, run.cfg.snippets, device=run.cfg.device, seed=run.cfg.seed)
    model, vocab, _ = load_alignment(run)
    path = run.out / "snippets.jsonl"
    stats = write_snippets(model, vocab, run.store(), run.usable(run.train), path, cfg)
    run.log(f"  beta {stats['beta']:.3g}: {stats['n_snippets']} snippets, mean {stats['mean_snippet_len']:.2f} words")
    return {"config": asdict(cfg), "path": str(path), **_plain(stats)}


def align_eval(run) -> dict:
    """Word-to-region accuracy against the ground-truth phrases of the eval split: MRF (chosen beta) vs argmax."""
    from align.evaluate import evaluate_alignment

    model, vocab, _ = load_alignment(run)
    beta = run.results["snippets"]["beta"]
    metrics = evaluate_alignment(model, vocab, run.store(), run.usable(run.eval), beta=beta)
    pictures = _pictures(run, model, vocab, beta)
    return {"metrics": _plain(metrics), "pictures": pictures}


def _pictures(run, model, vocab, beta) -> list[str]:
    """Alignment pictures (PNG) of the first few eval images, drawn by align.show when it exists."""
    try:
        from align.show import draw_alignment
    except ImportError:
        return []
    out = run.out / "align_eval"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rec in run.usable(run.eval)[: run.cfg.show_images]:
        p = out / f"{rec.id}.png"
        draw_alignment(model, vocab, run.store(), rec, rec.sentences[0], beta=beta).save(p)
        paths.append(str(p.relative_to(run.out)))
    return paths


def _plain(obj):
    """Make a summary JSON-able (numbers from tensors / numpy, dataclasses as dicts)."""
    if obj is None:
        return {}
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
