"""The pipeline's config: `PipelineConfig` (every default of the pipeline), ``--config key=value`` overrides, and
the helper that builds a stage's own config dataclass from the overrides given for it.

A bad override raises `ConfigError` (a ValueError) naming the key; the command turns it into exit status 2.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dvsa.data.errors import ConfigError


@dataclass
class PipelineConfig:
    """Every default of the pipeline lives here. The stages' own configs (RegionConfig, AlignConfig,
    GenConfig) keep their defaults; the dicts below only hold overrides of their fields."""

    dataset: str = "synthetic"
    root: str = ""
    out: str = "runs/pipeline"
    eval_split: str = "test"  # "dev" maps to "val"
    device: str = "cpu"
    limit: int | None = None  # at most this many images per split (smoke tests); None = all
    seed: int = 0
    region: dict = field(default_factory=dict)  # overrides of align.regions.RegionConfig
    # The stages' own defaults are the paper's recipes. The pipeline overrides a few so that a whole Flickr8k run
    # fits in 90 minutes on a 2-core CPU; measured on Flickr8k (500 held-out train images, R@K sum after epoch 3):
    # SGD 3e-4 (the paper's optimiser) 77, Adam 5e-4 with dropout 0.2 175; word2vec on the train split as the
    # (trained) initial word vectors added 14 to the R@K sum after the first epoch.
    align: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 5e-4, "dropout": 0.2,
                                                 "score_norm": "words", "train_words": "yes", "epochs": 10,
                                                 "lr_step": 8, "patience": 3})  # overrides of AlignConfig
    # GenConfig, full-image model: about 1.5 min per Flickr8k epoch on 2 cores (0.47 s per batch of 100 on one)
    gen: dict = field(default_factory=lambda: {"epochs": 10, "patience": 3})
    # region (snippet) model: the MRF gives several snippets per sentence, so fewer epochs are as many steps
    gen_region: dict = field(default_factory=lambda: {"input": "region+image", "epochs": 3, "patience": 2})
    snippets: dict = field(default_factory=dict)  # overrides of align.snippets.SnippetConfig (target_len, beta)
    # The learned box score (align.boxscore), fitted on the train split's annotated boxes where it has them, is
    # added to the word-region scores of the snippets and the evaluation with the weight of box_weights (or 0 = not
    # at all) that aligns the validation split's phrases best; () = never. Datasets without boxes (Flickr8k) or
    # without validation phrases skip it.
    box_score: dict = field(default_factory=dict)  # overrides of align.boxscore.BoxScoreConfig
    box_weights: tuple = (0.25, 0.5, 1.0)
    dense: dict = field(default_factory=dict)  # overrides of generate.dense.DenseConfig (beam, top)
    word_vectors: str | None = "train"  # None: learned from random (paper: little change) | "train": word2vec on
    #                                  the train split | a word2vec file (fixed vectors, eq. 2)
    holdout_val: int = 500  # with eval split "val", validation (early stopping) uses this many held-out train
    #                         images instead (at most a tenth of them), so the reported split is never tuned on
    beams: tuple = (1, 7)  # caption evaluation at each of these beam sizes
    report_beam: int = 7  # the beam whose scores go into results["captioning"]
    max_len: int = 20  # longest generated caption (words)
    retrieval_protocol: str = "1k"  # align.retrieval protocols: "1k" (first 1000 images) | "coco1k" | "5k" | "all"
    dense_images: int = 8  # dense captions are drawn for this many eval images
    dense_eval_images: int = 100  # DenseCap mAP on at most this many eval images (where regions have text)
    show_images: int = 6  # alignment pictures and examples in the report
    skip: tuple = ()  # stage names not to run (recorded as skipped)
    strict_data: bool = False  # a record the dataset reader would drop or repair is an error (DataError) instead


GROUPS = ("region", "align", "snippets", "box_score", "gen", "gen_region", "dense")  # stage-config override groups


def parse_value(text: str, none_word: bool = True) -> Any:
    """JSON when it parses, else the text. ``none`` means None only where `none_word` (pipeline fields such as
    word_vectors=none); in a stage group it stays the string "none", a value of several fields (lr_schedule=none)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if none_word and text.lower() == "none":
            return None
        return text


def apply_overrides(cfg: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """``key=value`` (PipelineConfig field) or ``group.key=value`` (group in region/align/gen/gen_region).
    Values parse as JSON when they can (``3``, ``0.5``, ``true``, ``[1,7]``), else as strings.
    Raises ConfigError for an item that is not key=value or names no field or group."""
    names = {f.name for f in dataclasses.fields(cfg)}
    groups = set(GROUPS)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--config: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        value = parse_value(text, none_word="." not in key)
        if "." in key:
            group, sub = key.split(".", 1)
            if group not in groups:
                raise ConfigError(f"--config: unknown group {group!r} in {item!r} (groups: {sorted(groups)})")
            getattr(cfg, group)[sub] = value
        elif key in names and key not in groups:
            if key in ("beams", "skip") and isinstance(value, (list, str)):
                value = tuple(value if isinstance(value, list) else value.split(","))
            setattr(cfg, key, value)
        else:
            raise ConfigError(f"--config: unknown key {key!r} (keys: {sorted(names - groups)})")
    return cfg


def dataclass_with(cls, overrides: dict, **defaults):
    """cls(**defaults, **overrides), naming the bad key (ConfigError) when an override is not a field of cls."""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ConfigError(f"--config: {cls.__name__} has no field(s) {bad}; fields: {sorted(names)}")
    return cls(**{**{k: v for k, v in defaults.items() if k in names}, **overrides})


def plain(obj):
    """Make a summary JSON-able (numbers from tensors / numpy, dataclasses as dicts)."""
    if obj is None:
        return {}
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
