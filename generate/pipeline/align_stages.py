"""Stage-1 bodies of the pipeline: features, alignment training, retrieval, MRF snippets, alignment evaluation.

Each ``fn(run) -> dict`` writes its outputs under ``run.out`` and returns a JSON-able result (see
`generate.pipeline.stages`). The work is done by the library (`align.*`, `data.*`); this module only wires it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np
import torch
from dvsa.align.boxscore import (
    BoxPrior,
    BoxScoreConfig,
    choose_box_weight,
    fit_box_scorer,
    load_box_scorer,
    save_box_scorer,
    tight_box_rate,
)
from dvsa.align.examples import retrieval_examples
from dvsa.align.ground import (
    evaluate_grounding,
    format_grounding_table,
    has_boxed_phrases,
)
from dvsa.align.grounding import evaluate_alignment, word_groups_for
from dvsa.align.hubness import HubnessConfig, bank_records
from dvsa.align.model import AlignConfig
from dvsa.align.regions import RegionConfig, RegionEncoder, extract_features
from dvsa.align.retrieval import (
    eval_items,
    evaluate_retrieval,
    protocol_folds,
    recall_sum,
)
from dvsa.align.show import picture
from dvsa.align.snippets import SnippetConfig, write_snippets
from dvsa.align.train import load_alignment as load_alignment_checkpoint
from dvsa.align.train import train_alignment
from dvsa.data.features import FeatureStore
from dvsa.data.text import Vocabulary
from dvsa.data.vectors import (
    VectorsConfig,
    load_word2vec,
    train_word2vec,
    vectors_for_vocab,
)
from dvsa.generate.pipeline.config import ConfigError, dataclass_with, plain
from dvsa.generate.pipeline.run import has_phrases


# ------------------------------------------------------------------------------------------ features
def features(run) -> dict:
    """Regions + CNN features of the train, validation and eval images in one store, ``out/features``
    (resumable: the store commits parts atomically and skips the images it holds; more images, e.g. another
    eval split, are added to it; a store made with another recipe is removed first)."""
    cfg = dataclass_with(RegionConfig, run.cfg.region, device=run.cfg.device)
    encoder = RegionEncoder.from_config(cfg)
    meta_path = run.out / "features" / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: v for k, v in old.items() if k != "format"} != json.loads(json.dumps(encoder.meta)):
            run.log(f"  {meta_path.parent} was made with another recipe: removing it")
            shutil.rmtree(meta_path.parent)
            run._stores.pop("features", None)
    seen, records = set(), []
    for r in run.train + run.val + run.eval:
        if r.id not in seen:
            seen.add(r.id)
            records.append(r)
    failed_before = [f["id"] for f in FeatureStore(meta_path.parent).failed()] if meta_path.is_file() else []
    store = extract_features(records, run.out / "features", cfg, encoder=encoder)  # retries failed_before
    run._stores.pop("features", None)
    failed = store.failed()
    for f in failed:
        run.log(f"  skipped image {f['id']} ({f['path']}): {f['reason']}")
    n_recovered = sum(i in store for i in failed_before)
    if failed_before:
        run.log(f"  {n_recovered} of {len(failed_before)} images that failed before were read this time")
    counts = [len(store.regions(i)[0]) for i in store.ids[:1000]]
    return {"config": asdict(cfg), "n_images": len(store), "n_failed": len(failed), "n_recovered": n_recovered,
            "dim": store.dim, "mean_regions": float(np.mean(counts)) if counts else 0.0}


# ------------------------------------------------------------------------------------------ alignment model
def align_train(run) -> dict:
    """The alignment model on the train split, early-stopped on the validation images (`run.val`)."""
    cfg = dataclass_with(AlignConfig, run.cfg.align, seed=run.cfg.seed)
    out = run.out / "align"
    vocab, vectors, coverage = None, None, None
    if run.cfg.word_vectors:
        vocab, vectors, coverage = _word_vectors(run, cfg)
    summary = train_alignment(run.usable(run.train), run.store(), out, cfg, device=run.cfg.device, log=run.log,
                              vocab=vocab, word_vectors=vectors, val_records=run.usable(run.val) or None,
                              progress=True)
    return {"config": asdict(cfg), "checkpoint": str(out / "model.pt"), "word_vectors": coverage,
            "train": plain({k: v for k, v in summary.items() if k != "history"})}


def _word_vectors(run, cfg):
    """(vocab, float [V, E] vectors, coverage) for `word_vectors`: "train" = word2vec on the train sentences,
    else a word2vec file (binary or text)."""
    sents = [s.tokens for r in run.train for s in r.sentences]
    vocab = Vocabulary.build(sents, min_count=cfg.min_count)
    if run.cfg.word_vectors == "train":
        kv = train_word2vec(sents, VectorsConfig(dim=cfg.word_dim, seed=run.cfg.seed))
    else:
        kv = load_word2vec(run.cfg.word_vectors)
    vectors, coverage = vectors_for_vocab(kv, vocab, seed=run.cfg.seed)
    if vectors.shape[1] != cfg.word_dim:
        raise ConfigError(f"word vectors have {vectors.shape[1]} dimensions; set align.word_dim={vectors.shape[1]}")
    run.log(f"  word vectors ({run.cfg.word_vectors}): {coverage}")
    return vocab, vectors, plain(coverage)


def load_alignment(run):
    """(model in eval mode, vocab, cfg) of the run's alignment checkpoint."""
    model, vocab, cfg = load_alignment_checkpoint(run.out / "align" / "model.pt")
    return model.eval(), vocab, cfg


def _beta_name(beta: float | None) -> str:
    return "plain" if beta is None else f"beta {beta:g}"


def _bank_betas(run, model, vocab, bank, hcfg: HubnessConfig) -> tuple[tuple, list[dict]]:
    """((annotation beta, search beta), rows): `hcfg.beta` both ways when fixed; else, for each direction, the
    beta of `hcfg.betas` with the best R@K sum of that direction on the validation images, or None (that
    direction uncorrected) when none beats the plain scores or there are no validation images. rows: the
    validation metrics, plain first, then per beta."""
    if hcfg.beta is not None:
        return (float(hcfg.beta), float(hcfg.beta)), []
    val = run.usable(run.val)
    if not val:
        return (None, None), []
    res = evaluate_retrieval(model, run.store(), val, vocab, protocol="1k", device=run.cfg.device, bank=bank,
                             bank_sentences=hcfg.sentences_per_image, betas=tuple(hcfg.betas))
    rows = [{"beta": None, **{k: res["plain"][k] for k in ("annotation", "search", "rsum")}}]
    rows += [{"beta": r["beta"][0], **{k: r[k] for k in ("annotation", "search", "rsum")}} for r in res["bank"]["rows"]]
    chosen = []
    for d in ("annotation", "search"):
        best = max(rows, key=lambda r: (recall_sum(r[d]), r["beta"] is None))
        chosen.append(best["beta"])
        run.log(f"  {d}: validation R@K sum " + ", ".join(f"{recall_sum(r[d]):.1f} ({_beta_name(r['beta'])})"
                                                          for r in rows) + f" -> {_beta_name(best['beta'])}")
    return tuple(chosen), rows


def _metrics(res: dict) -> dict:
    return {d: {k: float(res[d][k]) for k in ("r1", "r5", "r10", "medr", "meanr") if k in res[d]}
            for d in ("annotation", "search")}


def retrieval(run) -> dict:
    """Image annotation and image search on the eval split (`retrieval_protocol`, default the 1K protocol:
    the first 1000 images, 5 sentences each), plus a few ranked examples of the first fold for the report.
    With `hubness.images` > 0 the scores are corrected by a bank of train images (`align.hubness`) at the beta
    chosen on the validation images (no correction when none helps there or there are none); the metrics are
    then the corrected ones, and "plain" the model's own eq. 8 ranking."""
    model, vocab, cfg = load_alignment(run)
    records = run.usable(run.eval)
    hcfg = dataclass_with(HubnessConfig, run.cfg.hubness)
    bank = bank_records(run.usable(run.train), run.store(), hcfg.images, hcfg.seed) if hcfg.images > 0 else None
    betas, val_rows = _bank_betas(run, model, vocab, bank, hcfg) if bank else ((None, None), [])
    use = bank if any(b is not None for b in betas) else None
    res = evaluate_retrieval(model, run.store(), records, vocab, protocol=run.cfg.retrieval_protocol,
                             device=run.cfg.device, keep_scores=True, bank=use,
                             bank_sentences=hcfg.sentences_per_image, betas=(betas,))
    metrics = _metrics(res)
    bank_info = {"images": len(use) if use else 0, "sentences_per_image": hcfg.sentences_per_image,
                 "beta": list(betas) if use else None, "validation": val_rows,
                 "ids": [r.id for r in use] if use else [],
                 # the bank's sentences, for the photo indexes built from this run (`align.index`)
                 "texts": [" ".join(s.tokens) for r in use for s in [x for x in r.sentences if x.tokens]
                           [: hcfg.sentences_per_image]] if use else []}
    if use:
        run.log(f"  bank of {len(use)} train images, {_beta_name(betas[0])} / {_beta_name(betas[1])} (annotation / "
                f"search); the plain eq. 8 scores: annotation R@1 {res['plain']['annotation']['r1']:.1f}, search "
                f"R@1 {res['plain']['search']['r1']:.1f}")
    ids, tokens, owner, sids = eval_items(records, run.store(), vocab, 5, cfg.max_words)
    fold = protocol_folds(len(ids), run.cfg.retrieval_protocol)[0]
    keep = np.isin(owner, np.asarray(fold))
    scores = res["scores"]  # [N, S] of that fold, scored once
    by_id = {r.id: r for r in records}
    sent = {s.id: s for r in records for s in r.sentences}
    fold_recs = [by_id[ids[i]] for i in fold]
    fold_sents = [sent[i] for i, k in zip(sids, keep) if k]
    examples = retrieval_examples(fold_recs, res.get("scores_annotation", scores),
                                  torch.as_tensor(owner[keep] - fold.start), fold_sents, run.cfg.show_images,
                                  image_path=run.image_path, search_scores=res.get("scores_search"))
    (run.out / "retrieval_examples.json").write_text(json.dumps(examples))
    # Ties with the true item count in its favour in align.retrieval, so a collapsed model (every score equal)
    # would look perfect: report how many distinct scores there are, and say so loudly when there are few.
    distinct = float(torch.unique(scores).numel() / max(1, scores.numel()))
    if distinct < 0.5:
        run.log(f"  WARNING: only {100 * distinct:.1f}% of the image-sentence scores are distinct: the model has "
                "collapsed and the recalls above are not meaningful")
    out = {"metrics": metrics, "distinct_scores": distinct, "rsum": float(res["rsum"]), "protocol": res["protocol"],
           "n_folds": res["n_folds"], "fold_images": res["n_images"], "fold_sentences": res["n_sentences"],
           "bank": bank_info}
    if use:
        out["plain"] = {**_metrics(res["plain"]), "rsum": float(res["plain"]["rsum"])}
    return out


# ------------------------------------------------------------------------------------------ snippets and grounding
def _snippet_config(run):
    return dataclass_with(SnippetConfig, run.cfg.snippets, device=run.cfg.device, seed=run.cfg.seed)


def box_score(run) -> dict:
    """The learned box score on the train split's annotated boxes, and its weight in the word-region scores:
    the best of `box_weights` and 0 on the validation phrases (beta calibrated for each). Weight 0, with the
    reason, when the train split has no boxes or the validation split no phrases."""
    train, val = run.usable(run.train), run.usable(run.val)
    reason = ("box_weights is empty" if not run.cfg.box_weights
              else "the train split has no annotated boxes" if not any(r.regions for r in train)
              else "the validation split has no phrase boxes to choose the weight on" if not any(r.phrases for r in val)
              else None)
    if reason:
        run.log(f"  no box score: {reason}")
        return {"weight": 0.0, "reason": reason}
    cfg = dataclass_with(BoxScoreConfig, run.cfg.box_score)
    scorer, stats = fit_box_scorer(run.store(), train, cfg)
    stats["tight_box_rate_val"] = tight_box_rate(scorer, run.store(), val)
    model, vocab, _ = load_alignment(run)
    weight, rows = choose_box_weight(model, scorer, vocab, run.store(), train, val, run.cfg.box_weights,
                                     _snippet_config(run), groups=word_groups_for(run.cfg.dataset))
    path = run.out / "box_score.pt"
    save_box_scorer(path, scorer, {**stats, "weight": weight})
    for r in rows:
        run.log(f"  weight {r['weight']:g}: val word accuracy {r['word_accuracy']:.3f} (beta {r['beta']:.3g})")
    run.log(f"  box score: tight box around {stats['tight_box_rate_val']:.1%} of val objects; weight {weight:g}")
    return {"config": asdict(cfg), "path": str(path), "weight": weight, "val": rows, "stats": plain(stats)}


def aligned_model(run):
    """(model, vocab): the alignment model, with the box score added at its chosen weight (`box_score`)."""
    model, vocab, _ = load_alignment(run)
    res = run.results.get("box_score", {})
    if res.get("weight", 0.0) > 0:
        model = BoxPrior(model, load_box_scorer(res["path"]).to(run.cfg.device), res["weight"])
    return model, vocab


def snippets(run) -> dict:
    """MRF snippets of the train split; beta calibrated (SnippetConfig.target_len) on a sample of it."""
    cfg = _snippet_config(run)
    model, vocab = aligned_model(run)
    path = run.out / "snippets.jsonl"
    stats = write_snippets(model, vocab, run.store(), run.usable(run.train), path, cfg, progress=True)
    run.log(f"  beta {stats['beta']:.3g}: {stats['n_snippets']} snippets, mean {stats['mean_snippet_len']:.2f} words")
    stats = {k: v for k, v in stats.items() if k != "missing_images"}
    return {"config": asdict(cfg), "path": str(path), **plain(stats)}


def align_eval(run) -> dict:
    """The alignment pictures of the first `show_images` eval images; and, where the eval split has phrase
    boxes, word-to-region accuracy against them, MRF (the snippets' beta) vs the per-word argmax; and, where
    it has phrases with boxes (Entities) or COCO category words (`align.ground`), the grounding table under
    "grounding": IoU / pointing accuracy of the MRF and the argmax beside the box baselines, box recall."""
    model, vocab = aligned_model(run)
    beta = run.results["snippets"]["beta"]
    pictures = _pictures(run, model, vocab, beta)
    usable = run.usable(run.eval)
    grounding = None
    if has_boxed_phrases(usable):
        grounding = plain(evaluate_grounding(model, vocab, run.store(), usable, beta, device=run.cfg.device))
        run.log("  grounding (IoU / pointing accuracy):\n" + format_grounding_table(grounding))
    reason = has_phrases(run)
    if reason:  # e.g. Flickr8k without Entities: the pictures only (COCO: the pictures and the grounding)
        run.log(f"  no accuracy: {reason}")
        out = {"no_metrics": reason, "pictures": pictures}
        if grounding is not None:
            out["grounding"] = grounding
        return out
    groups = word_groups_for(run.cfg.dataset)
    metrics = evaluate_alignment(model, vocab, run.store(), run.usable(run.eval), beta, device=run.cfg.device,
                                 groups=groups)
    keep = ("word_accuracy", "word_accuracy_argmax", "phrase_accuracy", "phrase_accuracy_argmax",
            "phrase_upper_bound", "mean_snippet_len", "mean_snippet_len_argmax", "n_words", "n_phrases",
            "n_sentences", "n_images", "iou", "word_accuracy_by_group", "word_accuracy_by_group_argmax")
    out = {"box_weight": run.results.get("box_score", {}).get("weight", 0.0),
           "metrics": {k: plain(metrics[k]) for k in keep if k in metrics}, "details": plain(metrics),
           "pictures": pictures}
    if out["box_weight"] > 0:  # the aligner alone (model.model) for comparison, at the beta `box_score` found for it
        b0 = next(r["beta"] for r in run.results["box_score"]["val"] if r["weight"] == 0)
        m0 = evaluate_alignment(model.model, vocab, run.store(), run.usable(run.eval), b0, device=run.cfg.device,
                                groups=groups)
        out["metrics_without_box_score"] = {"beta": b0, **{k: plain(m0[k]) for k in keep if k in m0}}
    if grounding is not None:
        out["grounding"] = grounding
    return out


def _pictures(run, model, vocab, beta) -> list[str]:
    """PNG alignment figures (align.show.picture: boxes in colours, snippets below) of a few eval images."""
    out = run.out / "align_eval"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, rec in enumerate(run.usable(run.eval)[: run.cfg.show_images]):
        fig, _ = picture(model, vocab, run.store(), rec, rec.sentences[:2], beta, root=run.cfg.root,
                         device=run.cfg.device)
        p = out / f"{n:03d}.png"
        fig.save(p)
        paths.append(str(p.relative_to(run.out)))
    return paths
