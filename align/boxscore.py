"""A learned box score: how much a region of the store looks like one whole object (R-CNN's detector score).

The max-margin objective of stage 1 learns WHICH object a word is about, but not which of the boxes around that
object is the object: a box on a part of a red circle is as red as the circle, and a box with background around
it holds the same circle. R-CNN's detections come with a score learned from object boxes; the offline region
encoder ranks its proposals by ImageNet entropy instead, which is no such score. `BoxScorer` is that score:
a logistic regression on a region's CNN feature and its geometry (`align.model.box_geometry`), fitted on boxes
of a set of images with annotated objects (boxes only: no words, no classes). Positives are the store's regions
with IoU >= `BoxScoreConfig.iou` against an annotated box.

`BoxPrior(model, scorer, weight)` adds ``weight * score(region)`` to every word's score for that region, so the
chain MRF (eq. 12) prefers, among the regions a phrase could mean, the one that is a whole object:

    unary[b, t, r] = v_r . s_t + weight * score_r

The whole image (row 0) is scored like any box (``BoxScoreConfig.whole_image``): it is an object when an
annotated box fills most of the photo, and otherwise gets the low score of a box around nothing in particular.
With ``whole_image=False`` (the synthetic demo's recipe, and every box score saved before the option) row 0
scores 0, which on real photos is above nearly every box's logit and sends words to the whole image.

It stands in for the model wherever `word_region_scores` is called (snippets, evaluation, pictures); the
ranking of images against sentences (retrieval) does not use it.

Glossary: N regions, D region features, G geometry numbers, B pairs, T words, R regions per image.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from dvsa.align.grounding import evaluate_alignment
from dvsa.align.model import box_geometry, geometry_dim
from dvsa.align.score_cache import ScoreCache
from dvsa.align.snippets import snippet_beta
from dvsa.data.checkpoint import config_from, load_checkpoint, save_checkpoint
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import ImageRecord
from torch import nn
from torchvision.ops import box_iou


@dataclass
class BoxScoreConfig:
    iou: float = 0.5  # a region is an object (positive) when its IoU with an annotated box is >= iou
    geometry_bins: int = 16  # Gaussian bumps per box coordinate beside the 5 geometry numbers (box_geometry)
    l2: float = 1e-3  # weight decay of the logistic regression (on standardised inputs)
    max_iter: int = 200  # L-BFGS iterations
    max_images: int = 5000  # at most this many images of the given records are used for fitting (the first ones)
    whole_image: bool = True  # the whole image (row 0) is fitted and scored like any box; False: it scores 0

    def __post_init__(self):
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"BoxScoreConfig.iou must be in (0, 1], got {self.iou}")
        if self.geometry_bins < 0 or self.l2 < 0 or self.max_iter < 1 or self.max_images < 1:
            raise ValueError("BoxScoreConfig: geometry_bins and l2 must be >= 0, max_iter and max_images >= 1")


def box_inputs(feats: torch.Tensor, boxes: torch.Tensor, bins: int) -> torch.Tensor:
    """What the box score reads: feats [..., R, D] and boxes [..., R, 4] (row 0 the whole image) -> float
    [..., R, D + G], each region's feature and its `box_geometry`."""
    return torch.cat([feats.float(), box_geometry(boxes, bins)], -1)


class BoxScorer(nn.Module):
    """score(feats [..., R, D], boxes [..., R, 4]) -> float [..., R]: the logit of "this region is an object".

    Padded rows (zero boxes) score 0, and so does row 0 (the whole image, as in every feature store) unless
    ``cfg.whole_image``.
    """

    def __init__(self, feature_dim: int, cfg: BoxScoreConfig):
        super().__init__()
        self.cfg = cfg
        n = feature_dim + geometry_dim(cfg.geometry_bins)
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.linear = nn.Linear(n, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.requires_grad_(False)  # fitted by `fit_box_scorer`, never by backpropagation

    @property
    def feature_dim(self) -> int:
        """D: the size of the region features it was made for."""
        return self.mean.numel() - geometry_dim(self.cfg.geometry_bins)

    def inputs(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """[..., R, D], [..., R, 4] -> standardised [..., R, D + G]."""
        return (box_inputs(feats, boxes, self.cfg.geometry_bins) - self.mean) / self.std

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"the box score was fitted on {self.feature_dim}-dim region features, these have "
                             f"{feats.shape[-1]}: fit it on a store of the same feature recipe")
        s = self.linear(self.inputs(feats, boxes))[..., 0]  # [..., R]
        real = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        if not self.cfg.whole_image:
            real[..., 0] = False  # the whole image is not scored as an object
        return s.masked_fill(~real, 0.0)


def region_labels(store, records: list[ImageRecord], iou: float, bins: int,
                  progress: bool = False, whole_image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The store's regions of records that have annotated boxes (row 0, the whole image, only when
    `whole_image`): their `box_inputs` float [N, D + G] and labels float [N] (1 = IoU >= iou with an annotated
    box). `progress`: a bar over the records."""
    inputs, labels = [], []
    first = 0 if whole_image else 1  # the first store row that is fitted
    for r in progress_bar(records, total=len(records), desc="box labels", unit="img", enabled=progress):
        gt = [reg.box for reg in r.regions]
        if r.id not in store or not gt:
            continue
        b, f = store.regions(r.id)
        b, f = torch.from_numpy(b.copy()), torch.from_numpy(f.copy())
        best = box_iou(b[first:].double(), torch.tensor(gt, dtype=torch.float64)).max(1).values  # [R - first]
        inputs.append(box_inputs(f, b, bins)[first:])
        labels.append((best >= iou).float())
    if not inputs:
        raise ValueError("no record has both annotated boxes and regions in the store: nothing to fit a box score on")
    return torch.cat(inputs), torch.cat(labels)


def fit_box_scorer(store, records: list[ImageRecord], cfg: BoxScoreConfig,
                   progress: bool = True) -> tuple[BoxScorer, dict]:
    """A `BoxScorer` fitted (L-BFGS, logistic loss + l2) on the regions of `records` with annotated boxes.

    Returns (scorer, stats): stats has n_images, n_regions, positive_rate and the training accuracy.
    `progress`: bars over the records read and the L-BFGS loss evaluations (`dvsa.data.progress`).
    """
    records = [r for r in records if r.regions and r.id in store][: cfg.max_images]
    x, labels = region_labels(store, records, cfg.iou, cfg.geometry_bins, progress, cfg.whole_image)  # [N, D + G]
    scorer = BoxScorer(x.shape[1] - geometry_dim(cfg.geometry_bins), cfg)
    scorer.mean.copy_(x.mean(0))
    scorer.std.copy_(x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1]))
    z = (x - scorer.mean) / scorer.std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=cfg.max_iter, line_search_fn="strong_wolfe")
    bar = progress_bar(total=cfg.max_iter, desc="box score fit", unit="eval", enabled=progress)

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, labels) + cfg.l2 * (w * w).sum()
        loss.backward()
        bar.update(1)
        return loss

    opt.step(closure)
    bar.close()
    with torch.no_grad():
        scorer.linear.weight.copy_(w[None])
        scorer.linear.bias.copy_(b)
        acc = float(((z @ w + b > 0).float() == labels).float().mean())
    stats = {"n_images": len(records), "n_regions": len(labels), "positive_rate": float(labels.mean()),
             "train_accuracy": acc}
    return scorer.eval(), stats


@torch.no_grad()
def tight_box_rate(scorer: BoxScorer, store, records: list[ImageRecord], iou: float = 0.5) -> float:
    """For every annotated object, among the store's regions that overlap it (IoU > 0.1), is the best-scored one
    at IoU >= iou? The fraction of objects where it is (objects no region overlaps are left out; nan if none)."""
    hit = n = 0
    for r in records:
        if r.id not in store or not r.regions:
            continue
        b, f = store.regions(r.id)
        b, f = torch.from_numpy(b.copy()), torch.from_numpy(f.copy())
        s = scorer(f, b)
        ious = box_iou(b.double(), torch.tensor([reg.box for reg in r.regions], dtype=torch.float64))  # [R, O]
        ious[0] = 0.0
        for o in range(ious.shape[1]):
            near = (ious[:, o] > 0.1).nonzero()[:, 0]
            if len(near):
                n += 1
                hit += int(ious[near[s[near].argmax()], o] >= iou)
    return hit / n if n else float("nan")


def save_box_scorer(path: str | os.PathLike, scorer: BoxScorer, stats: dict | None = None) -> None:
    save_checkpoint(path, {"kind": "boxscore", "config": asdict(scorer.cfg), "feature_dim": scorer.feature_dim,
                           "model": scorer.state_dict(), "stats": stats or {}})


def load_box_scorer(path: str | os.PathLike) -> BoxScorer:
    ck = load_checkpoint(path, kind="boxscore", required=("model", "config", "feature_dim"))
    # a box score saved before BoxScoreConfig.whole_image existed left the whole image out
    cfg = config_from(path, lambda d: BoxScoreConfig(**{"whole_image": False, **d}), ck["config"])
    scorer = BoxScorer(int(ck["feature_dim"]), cfg)
    config_from(path, scorer.load_state_dict, ck["model"], "model")
    return scorer.eval()


class BoxPrior(nn.Module):
    """An alignment model whose word-region scores get ``weight * scorer(region)`` added (see the module doc)."""

    def __init__(self, model: nn.Module, scorer: BoxScorer, weight: float):
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"the box score weight must be >= 0, got {weight}")
        self.model, self.scorer, self.weight = model, scorer, float(weight)
        self.cfg = getattr(model, "cfg", None)

    def word_region_scores(self, feats, region_mask, tokens, lengths, boxes=None) -> torch.Tensor:
        """float [B, T, R] like the model's: padded regions -inf, padded words 0."""
        if boxes is None:
            raise ValueError("BoxPrior needs the regions' boxes")
        u = self.model.word_region_scores(feats, region_mask, tokens, lengths, boxes)
        prior = self.scorer(feats, boxes.to(feats.device)).to(u.dtype)  # [B, R]
        words = torch.arange(u.shape[1], device=u.device)[None, :] < lengths.to(u.device)[:, None]  # [B, T]
        return u + self.weight * prior[:, None, :] * words[..., None]

    def embed_words(self, tokens, lengths):
        return self.model.embed_words(tokens, lengths)

    def embed_regions(self, feats, boxes=None):
        return self.model.embed_regions(feats, boxes)


def choose_box_weight(model, scorer: BoxScorer, vocab, store, calib_records: list[ImageRecord],
                      val_records: list[ImageRecord], weights, snippet_cfg, groups: dict | None = None,
                      progress: bool = True) -> tuple[float, list[dict]]:
    """The weight of `weights` (0 = no box score, always tried) with the best content-word accuracy on the
    phrase boxes of `val_records`, beta calibrated for each weight on `calib_records` as `snippet_cfg` says (or
    its fixed beta). Returns (weight, [{weight, beta, word_accuracy, phrase_accuracy}] per weight tried);
    ties go to the smaller weight. `progress`: a bar over the weights. The model's scores are computed once
    (`ScoreCache`): only the box score's share changes from one weight to the next."""
    model = ScoreCache(model)
    rows = []
    ws = sorted({0.0, *(float(x) for x in weights)})
    for w in progress_bar(ws, total=len(ws), desc="box weight", unit="weight", enabled=progress):
        m = BoxPrior(model, scorer, w) if w > 0 else model
        beta, _ = snippet_beta(m, vocab, store, calib_records, snippet_cfg)
        res = evaluate_alignment(m, vocab, store, val_records, beta, batch_size=snippet_cfg.batch_size,
                                 device=snippet_cfg.device, groups=groups, progress=False)
        rows.append({"weight": w, "beta": beta, "word_accuracy": res["word_accuracy"],
                     "phrase_accuracy": res["phrase_accuracy"]})
    best = max(rows, key=lambda r: (r["word_accuracy"], -r["weight"]))
    return best["weight"], rows
