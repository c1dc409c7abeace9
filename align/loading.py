"""Opening a trained aligner with its data for the stage-1 commands: the checkpoint (with an optional learned box
score), the feature store, the records of a split, and the beta of eq. 12 (fixed, read from a snippets summary,
or calibrated to a mean snippet length)."""
from __future__ import annotations

import json
from pathlib import Path

from dvsa.align.boxscore import BoxPrior, load_box_scorer
from dvsa.align.snippets import SnippetConfig, snippet_beta
from dvsa.align.train import load_alignment
from dvsa.data import catalog
from dvsa.data.features import FeatureStore
from dvsa.data.reader_args import dataset_kwargs
from dvsa.data.records import DataError, select_split
from dvsa.data.text import Vocabulary
from dvsa.data.vectors import load_vectors, load_word2vec, vectors_for_vocab


def load_model(path: str, device: str = SnippetConfig.device):
    """(model in eval mode on `device`, vocab, cfg) from an alignment checkpoint."""
    model, vocab, cfg = load_alignment(path)
    model.to(device).eval()
    return model, vocab, cfg


def load_records(dataset: str, root: str, split: str | None = None, dataset_args: list[str] | None = None,
                 limit: int | None = None) -> list:
    """The records of `split` ("all" or None: every record) of a catalog dataset, at most `limit` of them;
    `dataset_args` are ``KEY=VALUE`` reader keywords (`data.reader_args.dataset_kwargs`)."""
    records = catalog.load_dataset(dataset, root, **dataset_kwargs(dataset_args or []))
    if split not in (None, "all"):
        records = select_split(records, split)
    return records if limit is None else records[:limit]


def open_inputs(checkpoint: str, store: str, dataset: str, root: str, split: str, limit: int | None = None,
                device: str = SnippetConfig.device, box_scorer: str | None = None, box_weight: float = 0.0):
    """(model, vocab, store, records of `split` (the first `limit`), all records); with `box_scorer` the model
    adds `box_weight` x the learned box score of each region (`align.boxscore.BoxPrior`). Errors name the bad
    input."""
    all_records = catalog.load_dataset(dataset, root)
    records = select_split(all_records, split)
    if limit is not None:
        records = records[:limit]
    feature_store = FeatureStore(store)
    model, vocab, _ = load_model(checkpoint, device)
    if box_scorer:
        model = BoxPrior(model, load_box_scorer(box_scorer).to(device), box_weight)
    return model, vocab, feature_store, records, all_records


def resolve_beta(model, vocab, store, all_records, split: str, beta: float | None = None,
                 beta_from: str | None = None, target_len: float = SnippetConfig.target_len,
                 device: str = SnippetConfig.device) -> tuple[float, str]:
    """(beta, how it was chosen): `beta` when given, else the "beta" of the snippets summary `beta_from`, else
    calibrated to `target_len` on the train split of `all_records` (on `split` when there is none)."""
    if beta is not None:
        return float(beta), "fixed"
    if beta_from:
        return float(json.loads(Path(beta_from).read_text())["beta"]), f"from {beta_from}"
    try:
        sample = select_split(all_records, "train")
        where = "train"
    except DataError:
        sample = select_split(all_records, split)
        where = split
    cfg = SnippetConfig(target_len=target_len, device=device)
    value, got = snippet_beta(model, vocab, store, sample, cfg)
    return value, f"calibrated on {where} to mean snippet length {cfg.target_len} (got {got:.2f})"


def word_vectors_for(path: str, vocab, log=print):
    """float [V, E] for `vocab` from a .npy written by `dvsa vectors`, or from a word2vec file."""
    if path.endswith(".npy"):
        mat, cov = load_vectors(path, vocab)
    else:
        mat, cov = vectors_for_vocab(load_word2vec(path), vocab)
    log(f"word vectors {path}: {cov.get('found')} of {cov.get('total')} words found")
    return mat


def vocab_and_vectors(records, path: str, min_count: int, log=print):
    """(vocabulary of the train split's sentences, its fixed word vectors float [V, E] from `path`)."""
    vocab = Vocabulary.build([s.tokens for r in select_split(records, "train") for s in r.sentences],
                             min_count=min_count)
    return vocab, word_vectors_for(path, vocab, log)
