"""The pipeline's config: `PipelineConfig` (every default of the pipeline), ``--set key=value`` overrides
(checked against PipelineConfig and each stage's dataclass by `data.overrides`), and the helper that builds a
stage's own config dataclass from the overrides given for it.

A bad override raises `ConfigError` (a usage error, exit status 2) naming the key, before any stage runs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dvsa.align.boxscore import BoxScoreConfig
from dvsa.align.hubness import HubnessConfig
from dvsa.align.model import AlignConfig
from dvsa.align.regions.config import RegionConfig
from dvsa.align.snippets import SnippetConfig
from dvsa.data import overrides
from dvsa.data.errors import ConfigError
from dvsa.generate.dense import DenseConfig
from dvsa.generate.model import GenConfig


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
    # fits in 45 minutes on a 2-core CPU; measured on Flickr8k (500 held-out train images, R@K sum after epoch 3):
    # SGD 3e-4 (the paper's optimiser) 77, Adam 5e-4 with dropout 0.2 175; word2vec on the train split as the
    # (trained) initial word vectors added 14 to the R@K sum after the first epoch. Box geometry with 16 bumps
    # per coordinate: R@K sum after 10 epochs 270.5 -> 279.4 (whole-image dropout 0.5: 234.7, hardest negatives
    # after 3 epochs: 250.4; docs/experiments.md). Every trainer runs its forward in bf16 on a CPU that computes
    # bf16 natively (cpu_amp; plain fp32 elsewhere): on the 2-core CPU align_train took 903 s against 1,331 and
    # gen_full 503 against 957, for a held-out R@K sum of 275.5 against 277.9 and a val CIDEr of 0.381 against 0.374.
    # The time bf16 saves buys 14 aligner epochs (the rate / 10 after 11) instead of 10 (after 8): held-out R@K
    # sum 286.4 against 275.5.
    align: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 5e-4, "dropout": 0.2,
                                                 "score_norm": "words", "train_words": "yes", "epochs": 14,
                                                 "lr_step": 11, "patience": 3, "geometry": True,
                                                 "geometry_bins": 16, "cpu_amp": True})  # overrides of AlignConfig
    # GenConfig, full-image model: about 50 s per Flickr8k epoch beside the aligner on 2 cores (bf16)
    gen: dict = field(default_factory=lambda: {"epochs": 10, "patience": 3, "cpu_amp": True})
    # region (snippet) model: the MRF gives several snippets per sentence, so fewer epochs are as many steps
    gen_region: dict = field(default_factory=lambda: {"input": "region+image", "epochs": 3, "patience": 2,
                                                      "cpu_amp": True})
    # the region-attention generator (generate.attention), trained by gen_attention and scored beside gen_full by
    # captions only when `attention` is true (off by default: it did not beat gen_full on Flickr8k dev in the
    # time-matched CPU comparison of issue 17; gen_full stays the default generator)
    attention: bool = False
    gen_attention: dict = field(default_factory=lambda: {"arch": "attention", "input": "regions", "epochs": 10,
                                                         "patience": 3, "cpu_amp": True})
    snippets: dict = field(default_factory=dict)  # overrides of align.snippets.SnippetConfig (target_len, beta)
    # The learned box score (align.boxscore), fitted on the train split's annotated boxes where it has them
    # (Flickr8k: its Entities boxes), is added to the word-region scores of the snippets and the evaluation with
    # the weight of box_weights (or 0 = not at all) that aligns the validation split's phrases best; () = never.
    # Datasets without boxes or without validation phrases skip it. On Flickr8k's held-out train photos the
    # phrases' IoU accuracy grew with the weight (0.195 at 0, 0.233 at 1, 0.274 at 4, 0.279 at 8) while pointing
    # fell (docs/experiments.md)
    box_score: dict = field(default_factory=dict)  # overrides of align.boxscore.BoxScoreConfig
    box_weights: tuple = (0.5, 1.0, 2.0, 4.0, 8.0)
    dense: dict = field(default_factory=dict)  # overrides of generate.dense.DenseConfig (beam, top)
    word_vectors: str | None = "train"  # None: learned from random (paper: little change) | "train": word2vec on
    #                                  the train split | a word2vec file (fixed vectors, eq. 2)
    holdout_val: int = 500  # with eval split "val", validation (early stopping) uses this many held-out train
    #                         images instead (at most a tenth of them), so the reported split is never tuned on
    beams: tuple = (1, 7, 15)  # caption evaluation at each of these beam sizes (7: the paper's)
    report_beam: int = 15  # the beam whose scores go into results["captioning"] (GenConfig.beam) and region captions
    max_len: int = 20  # longest generated caption (words)
    retrieval_protocol: str = "1k"  # align.retrieval protocols: "1k" (first 1000 images) | "coco1k" | "5k" | "all"
    # overrides of align.hubness.HubnessConfig: the retrieval scores corrected by a bank of train images (the
    # inverted softmax), a beta per direction chosen on the validation images
    hubness: dict = field(default_factory=dict)
    dense_images: int = 8  # dense captions are drawn for this many eval images
    dense_eval_images: int = 100  # DenseCap mAP on at most this many eval images (where regions have text)
    show_images: int = 6  # alignment pictures and examples in the report
    skip: tuple = ()  # stage names not to run (recorded as skipped)
    # gen_full trains in a second process beside align_train and what follows it (on a CPU with 2+ cores, one
    # process; each gets half the threads); false: every stage in turn in this process
    parallel: bool = True
    strict_data: bool = False  # a record the dataset reader would drop or repair is an error (DataError) instead


GROUPS = ("region", "align", "snippets", "box_score", "hubness", "gen", "gen_region", "gen_attention", "dense")  # override groups
GROUP_CONFIGS = {"region": RegionConfig, "align": AlignConfig, "snippets": SnippetConfig, "box_score": BoxScoreConfig,
                 "hubness": HubnessConfig, "gen": GenConfig, "gen_region": GenConfig, "gen_attention": GenConfig,
                 "dense": DenseConfig}  # the dataclass of each group


def set_targets() -> dict[str, type]:
    """What ``--set`` of the pipeline reaches: {"": PipelineConfig, "pipeline": PipelineConfig, group: its
    stage dataclass} (`data.overrides.parse_set`)."""
    return {"": PipelineConfig, "pipeline": PipelineConfig, **GROUP_CONFIGS}


def parse_value(text: str) -> Any:
    """JSON when it parses, else the text (`data.overrides.parse_value`)."""
    return overrides.parse_value(text)


def apply_overrides(cfg: PipelineConfig, items: list[str] | tuple[str, ...]) -> PipelineConfig:
    """``--set`` items: ``key=value`` or ``pipeline.key=value`` (a PipelineConfig field) or ``group.key=value``
    (group in GROUPS, a field of that stage's dataclass, see GROUP_CONFIGS). Every item is checked against its
    dataclass (name and type, `data.overrides`) before `cfg` changes, and so are the group dicts `cfg` already
    holds; raises ConfigError naming the bad key (and value)."""
    parsed = overrides.parse_set(list(items), set_targets())
    top = {**parsed.pop(""), **parsed.pop("pipeline")}
    bad = sorted(set(top) & set(GROUPS))
    if bad:
        raise ConfigError(f"--set {bad[0]}=...: {bad[0]!r} is a stage; set its fields as {bad[0]}.KEY=VALUE")
    for group, values in parsed.items():
        getattr(cfg, group).update(values)
    for key, value in top.items():
        setattr(cfg, key, value)
    check_groups(cfg)
    return cfg


def check_groups(cfg) -> None:
    """ConfigError when a stage group dict of `cfg` (PipelineConfig or DemoConfig) names no field of its
    dataclass or holds a value of another type."""
    for group, cls in GROUP_CONFIGS.items():
        if hasattr(cfg, group):
            overrides.check_fields(cls, getattr(cfg, group), f"{group}.")


def dataclass_with(cls, overrides: dict, **defaults):
    """cls(**defaults, **overrides), naming the bad key (ConfigError) when an override is not a field of cls."""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ConfigError(f"--set: {cls.__name__} has no field(s) {bad}; fields: {sorted(names)}")
    return cls(**{**{k: v for k, v in defaults.items() if k in names}, **overrides})


def plain(obj):
    """Make a summary JSON-able (numbers from tensors / numpy, dataclasses as dicts)."""
    if obj is None:
        return {}
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
