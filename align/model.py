"""Stage-1 alignment model: regions projected into a multimodal space (eq. 1), words embedded by a
bidirectional ReLU RNN (eqs. 2-6); image-sentence scores live in `align.scores`, the loss in `align.loss`.

Dimension glossary:
    B  images (or image-sentence pairs) in a batch      S  sentences
    R  regions of one image (row 0 = whole image)       T  words of one (padded) sentence
    D  region feature size (1280 EfficientNet-Lite0, 2048 ResNet-50, 4096 VGG fc7)
    E  word vector size (300 word2vec)                   K  BRNN hidden size (300..600 in the paper)
    H  multimodal embedding size h (1000..1600)          V  vocabulary size (PAD 0, START 1, END 2, UNK 3)

`AlignConfig` is the only home of stage-1 defaults: the model, the objective and the training recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from dvsa.data.dropout import Dropout
from dvsa.data.standardize import standardization, standardize
from torch import nn
from torch.nn import functional as F

GEOMETRY_DIM = 5  # x1 / W, y1 / H, x2 / W, y2 / H, box area / image area


def geometry_dim(bins: int = 0) -> int:
    """Numbers `box_geometry(boxes, bins)` gives per box: the 5 of GEOMETRY_DIM, + 4 x bins with bins > 0."""
    return GEOMETRY_DIM + 4 * bins


def box_geometry(boxes: torch.Tensor, bins: int = 0) -> torch.Tensor:
    """float [..., R, 4] boxes of one image per leading index, row 0 = the whole image [0, 0, W, H] (as in every
    feature store) -> float [..., R, geometry_dim(bins)]: the box's corners as fractions of the image and its area
    as a fraction of the image's; with bins > 0 also its centre x, centre y, width and height (fractions of the
    image) each spread over `bins` Gaussian bumps evenly spaced on [0, 1] (each as wide as their spacing), in that
    order. A linear map of the 5 numbers gives a broad preference for larger or smaller boxes; of the bumps, for a
    range of widths and heights ("large" = a large object's size: not a part of it, nor a box around more).
    Padded rows (zero boxes) give zeros."""
    boxes = boxes.float()
    frame = boxes[..., :1, :]  # [..., 1, 4]
    w = (frame[..., 2] - frame[..., 0]).clamp_min(1e-6)[..., None]  # [..., 1, 1]
    h = (frame[..., 3] - frame[..., 1]).clamp_min(1e-6)[..., None]
    scale = torch.cat([w, h, w, h], -1)  # [..., 1, 4]
    corners = boxes / scale
    area = ((corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1]))[..., None]
    if bins <= 0:
        return torch.cat([corners, area], -1)
    place = torch.stack([(corners[..., 0] + corners[..., 2]) / 2, (corners[..., 1] + corners[..., 3]) / 2,
                         corners[..., 2] - corners[..., 0], corners[..., 3] - corners[..., 1]], -1)  # [..., R, 4]
    centres = torch.linspace(0.0, 1.0, bins, device=boxes.device)  # [bins]
    width = 1.0 / max(bins - 1, 1)
    bumps = torch.exp(-0.5 * ((place[..., None] - centres) / width) ** 2)  # [..., R, 4, bins]
    real = (boxes.abs().sum(-1, keepdim=True) > 0).float()  # [..., R, 1]
    return torch.cat([corners, area, bumps.flatten(-2) * real], -1)


@dataclass
class AlignConfig:
    # --- model (eqs. 1-6) ---
    embed_dim: int = 1000  # H: multimodal embedding size h (paper: 1000..1600)
    hidden_dim: int = 500  # K: BRNN hidden size (paper: 300..600)
    word_dim: int = 300  # E: word vector size (word2vec: 300)
    train_words: str = "auto"  # "auto": fixed when pretrained vectors are given, trained when random; "yes" | "no"
    region_init_std: float = 0.0  # > 0: W_m starts as N(0, std) so first scores are small (0 = PyTorch default)
    dropout: float = 0.5  # on the non-recurrent layers: region features, word vectors, BRNN output (eq. 6 input)
    feat_norm: str = "none"  # "standardize": region features x -> (x - mean) / std per dimension, statistics of
    #                           the training images' regions, kept in the model | "none": raw CNN features (paper)
    geometry: bool = False  # True: each region's CNN feature is extended by its box's place and size in the image
    #                         (`box_geometry`, 5 numbers) before eq. 1. A warped crop has lost its size: without
    #                         this, "small" and "large" can only be read from the whole image. False = the paper.
    geometry_bins: int = 0  # with geometry: > 0 adds the box's centre, width and height, each as this many
    #                         Gaussian bumps over [0, 1] (`box_geometry`), so a word can prefer boxes of one size
    max_words: int = 40  # longer sentences are cut (keeps the recurrence short; Flickr/COCO sentences are < 40)
    min_count: int = 5  # vocabulary: words seen at least this often in the training sentences (paper: 5)
    # --- score and objective (eqs. 7-9) ---
    score: str = "max"  # "max": eq. 8 (each word takes its best region) | "defrag": eq. 7
    score_norm: str = "none"  # "none": eq. 8 as written | "words": divided by the sentence's number of words
    loss: str = "sum"  # "sum": eq. 9 over all negatives | "hardest": VSE++ hardest negative per row/column
    hardest_from: int = 0  # loss="hardest": the first this many epochs use the sum (a warm-up; from scratch the
    #                        hardest negative alone collapsed every score on Flickr8k)
    margin: float = 1.0  # the 1 of eq. 9
    whole_image_drop: float = 0.0  # training only: the chance that an image's whole-image row (row 0) is hidden
    #                                from a batch (never for images without detections), so words must find their
    #                                object's box; 0 = the paper
    # --- training recipe ---
    optimizer: str = "sgd"  # "sgd" (paper: momentum 0.9) | "adam"
    # lr: the loss is averaged over the batch (align.loss), so lr does not scale with the batch size. On the
    # synthetic scenes (EfficientNet-Lite0 regions, D=1280) SGD 1e-3 collapsed every score to one value, 1e-4
    # fit worse than 3e-5; with score_norm="words" (scores ~12x smaller) 3e-4 worked best.
    lr: float = 3e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4  # L2 on all weights (paper: cross-validated)
    grad_clip: float = 5.0  # elementwise clipping of every gradient entry at +-5 (paper: "important"); 0 = off
    batch_size: int = 100  # image-sentence pairs per (global) batch
    epochs: int = 15
    lr_schedule: str = "step"  # "step" | "cosine" | "none"
    lr_step: int = 5  # step schedule: multiply lr by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1
    patience: int = 5  # early stopping: epochs without a better validation R@K sum (0 = never stop early); a
    #                    step schedule's next step is always reached (`align.train.should_stop`)
    val_images: int = 1000  # validation uses the first this many val images (the 1K protocol)
    amp: bool = True  # bf16 autocast when training on CUDA (on the CPU only with cpu_amp)
    # bf16 autocast when training on a CPU that computes bf16 natively (avx512_bf16 / amx_bf16; ignored elsewhere)
    cpu_amp: bool = False
    precollate_gb: float = 4.0  # the train split's regions and sentences are collated once into memory when they
    #                             take at most this many GB (Flickr8k at D=1280: 0.6), else every batch is read
    #                             from the store; the same batches either way; 0 = always per batch
    seed: int = 0

    def __post_init__(self):
        if self.score not in ("max", "defrag"):
            raise ValueError(f"AlignConfig.score must be 'max' or 'defrag', got {self.score!r}")
        if self.loss not in ("sum", "hardest"):
            raise ValueError(f"AlignConfig.loss must be 'sum' or 'hardest', got {self.loss!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"AlignConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.lr_schedule not in ("step", "cosine", "none"):
            raise ValueError(f"AlignConfig.lr_schedule must be 'step', 'cosine' or 'none', got {self.lr_schedule!r}")
        if not 0.0 <= self.whole_image_drop < 1.0:
            raise ValueError(f"AlignConfig.whole_image_drop must be in [0, 1), got {self.whole_image_drop}")
        if self.score_norm not in ("none", "words"):
            raise ValueError(f"AlignConfig.score_norm must be 'none' or 'words', got {self.score_norm!r}")
        if self.geometry_bins < 0 or (self.geometry_bins and not self.geometry):
            raise ValueError(f"AlignConfig.geometry_bins must be >= 0 and needs geometry=True, got {self.geometry_bins}")
        if self.feat_norm not in ("none", "standardize"):
            raise ValueError(f"AlignConfig.feat_norm must be 'none' or 'standardize', got {self.feat_norm!r}")
        if not self.precollate_gb >= 0:
            raise ValueError(f"AlignConfig.precollate_gb must be >= 0, got {self.precollate_gb}")
        if self.train_words not in ("auto", "yes", "no"):
            raise ValueError(f"AlignConfig.train_words must be 'auto', 'yes' or 'no', got {self.train_words!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "AlignConfig":
        """Rebuild from `dataclasses.asdict` output; unknown keys are an error (a config from another version)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown AlignConfig fields {unknown}")
        return cls(**d)


def lengths_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """bool [S, T]: True at the first lengths[s] positions of each row."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of x [S, T, ...] within its own length; padding stays at the end.

    Applying it twice gives x back. Used so the backward recurrence starts at each sentence's true last word.
    """
    s, t = x.shape[:2]
    pos = torch.arange(t, device=x.device)[None, :].expand(s, t)  # [S, T]
    rev = lengths[:, None] - 1 - pos  # [S, T]
    idx = torch.where(rev >= 0, rev, pos)  # padded positions map to themselves
    idx = idx.reshape(s, t, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def _step_order(lengths: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The recurrences' order of the W real words of sentences lengths long [S] padded to T: step 0 of every
    sentence (longest first), then step 1 of those still running, ... Returns (fwd long [W], bwd long [W],
    running [T]): the sentence-order index (as in x[mask]) of each word in that order, left to right (eq. 4) and
    right to left within each sentence's own length (eq. 5), and how many sentences run at each step."""
    order = torch.argsort(lengths, descending=True, stable=True)  # [S]
    steps = torch.arange(t, device=lengths.device)[:, None]  # [T, 1]
    live = lengths[order][None, :] > steps  # [T, S]
    sent = order[None, :].expand_as(live)[live]  # [W] sentence of each word, in step order
    step = steps.expand_as(live)[live]  # [W]
    first = torch.cumsum(lengths, 0) - lengths  # [S] first word of each sentence in x[mask]
    fwd = first[sent] + step
    bwd = first[sent] + lengths[sent] - 1 - step
    return fwd, bwd, live.sum(1).tolist()


def _rows(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """x float [S, T, C] -> float [len(at), C]: the rows of x viewed as [S x T, C] at flat places `at` (long).
    `index_select` (and `_padded`'s `index_copy`), whose backward is a plain gather or scatter: a boolean index's
    backward accumulates into its zeros, about 10x slower on the CPU."""
    return x.reshape(-1, x.shape[-1]).index_select(0, at)


def _padded(rows: torch.Tensor, at: torch.Tensor, s: int, t: int) -> torch.Tensor:
    """rows float [W, C] at flat places `at` (long [W], distinct) of an [S, T] grid -> float [S, T, C], 0 elsewhere."""
    return rows.new_zeros(s * t, rows.shape[-1]).index_copy(0, at, rows).view(s, t, -1)


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    """The inverse of a permutation long [W]."""
    return torch.empty_like(perm).scatter_(0, perm, torch.arange(perm.numel(), device=perm.device))


class AlignmentModel(nn.Module):
    """Region projection (eq. 1) and bidirectional ReLU RNN over words (eqs. 2-6).

    `embed_regions` and `embed_words` give the embeddings; `forward` gives both for a batch of pairs;
    `word_region_scores` gives v_i . s_t for aligned pairs (the MRF's unary terms).
    In train mode dropout is applied to the region features, the word vectors and the BRNN output.
    """

    def __init__(self, cfg: AlignConfig, vocab_size: int, feat_dim: int, word_vectors=None):
        """word_vectors: optional float array [V, E] (e.g. word2vec rows for the vocabulary) to initialise W_w."""
        super().__init__()
        self.cfg, self.vocab_size, self.feat_dim = cfg, vocab_size, feat_dim
        # what eq. 1 projects: D, or D + geometry_dim(bins) with cfg.geometry
        self.in_dim = feat_dim + (geometry_dim(cfg.geometry_bins) if cfg.geometry else 0)
        self.region_proj = nn.Linear(self.in_dim, cfg.embed_dim)  # W_m, b_m (eq. 1)
        self.words = nn.Embedding(vocab_size, cfg.word_dim, padding_idx=0)  # W_w (eq. 2)
        self.word_in = nn.Linear(cfg.word_dim, cfg.hidden_dim)  # W_e, b_e (eq. 3)
        self.fwd = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)  # W_f, b_f (eq. 4)
        self.bwd = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)  # W_b, b_b (eq. 5)
        self.word_out = nn.Linear(cfg.hidden_dim, cfg.embed_dim)  # W_d, b_d (eq. 6)
        self.drop = Dropout(cfg.dropout)
        # region feature normalisation x -> (x - feat_mean) * feat_scale; identity until set_feature_norm
        self.register_buffer("feat_mean", torch.zeros(self.in_dim))
        self.register_buffer("feat_scale", torch.ones(self.in_dim))
        # ReLU recurrences explode when W_f starts with a large spectral radius: start near the identity scale.
        for lin in (self.fwd, self.bwd):
            nn.init.normal_(lin.weight, std=0.5 / cfg.hidden_dim**0.5)
            nn.init.zeros_(lin.bias)
        if cfg.region_init_std > 0:
            nn.init.normal_(self.region_proj.weight, std=cfg.region_init_std)
            nn.init.zeros_(self.region_proj.bias)
        pretrained = word_vectors is not None
        if pretrained:
            self.set_word_vectors(word_vectors)
        trained = cfg.train_words == "yes" or (cfg.train_words == "auto" and not pretrained)
        self.words.weight.requires_grad_(trained)

    def set_word_vectors(self, vectors) -> None:
        """Copy float [V, E] vectors into W_w (row 0, padding, is kept at zero)."""
        w = torch.as_tensor(vectors, dtype=self.words.weight.dtype)
        if tuple(w.shape) != tuple(self.words.weight.shape):
            raise ValueError(f"word vectors have shape {list(w.shape)}, expected {list(self.words.weight.shape)}")
        with torch.no_grad():
            self.words.weight.copy_(w)
            self.words.weight[0].zero_()

    def set_feature_norm(self, feats: torch.Tensor, eps: float = 1e-2) -> None:
        """Standardise region features with the statistics of training regions feats float [N, D] (with
        `cfg.geometry`, [N, D + geometry_dim(bins)]: `region_inputs` of the training boxes)."""
        mean, scale = standardization(feats, self.in_dim, eps)
        with torch.no_grad():
            self.feat_mean.copy_(mean)
            self.feat_scale.copy_(scale)

    def region_inputs(self, feats: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """feats float [..., R, D] (+ boxes float [..., R, 4], row 0 the whole image, needed with `cfg.geometry`)
        -> the input of eq. 1, float [..., R, D] or [..., R, D + geometry_dim(cfg.geometry_bins)]."""
        if feats.shape[-1] != self.feat_dim:
            raise ValueError(f"region features must have {self.feat_dim} values, got {list(feats.shape)}")
        if not self.cfg.geometry:
            return feats
        if boxes is None:
            raise ValueError("this alignment model reads box geometry (AlignConfig.geometry): pass the boxes too")
        if boxes.shape[:-1] != feats.shape[:-1] or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be {list(feats.shape[:-1]) + [4]}, got {list(boxes.shape)}")
        geo = box_geometry(boxes.to(feats.device), self.cfg.geometry_bins)
        return torch.cat([feats, geo.to(feats.dtype)], -1)

    def embed_regions(self, feats: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """feats float [B, R, D] (boxes float [B, R, 4] with `cfg.geometry`) -> v float [B, R, H] (eq. 1).
        Padded regions are masked by the caller."""
        if feats.dim() != 3:
            raise ValueError(f"feats must be [B, R, {self.feat_dim}], got {list(feats.shape)}")
        feats = self.region_inputs(feats, boxes)
        feats = standardize(feats, self.feat_mean, self.feat_scale)
        return self.region_proj(self.drop(feats))

    def embed_words(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens long [S, T] (PAD 0 after each sentence), lengths long [S] >= 1 -> s float [S, T, H], 0 at padding.

        The backward recurrence (eq. 5) runs over each sentence reversed within its own length, so it starts at
        the true last word whatever the padding. Only real words are computed: eqs. 3 and 6 on the W real words,
        and each recurrence step on the sentences still running (padding never reaches a real word: it comes
        after them in both directions). Dropout is drawn over the padded [S, T, .] blocks, so the same seed draws
        the same masks whatever is skipped (`embed_words_slow` is the padded twin).
        """
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"tokens must be [S, T] and lengths [S], got {list(tokens.shape)}, {list(lengths.shape)}")
        lengths = lengths.to(tokens.device)
        s, t = tokens.shape
        real_at = lengths_mask(lengths, t).reshape(-1).nonzero().squeeze(1)  # [W] real words' places in S x T
        x = _rows(self.drop(self.words(tokens)), real_at)  # [W, E] (dropout over [S, T, E])  eq. 2
        real = F.relu(self.word_in(x))  # [W, K] real words, sentence by sentence          eq. 3
        fwd, bwd, running = _step_order(lengths, t)
        # eqs. 4 and 5 side by side, step by step: left to right, and each sentence reversed within its length
        hf, hb = self._recur_both(torch.stack([real.index_select(0, fwd), real.index_select(0, bwd)]), running)
        h = hf.index_select(0, _inverse(fwd)) + hb.index_select(0, _inverse(bwd))  # [W, K] in sentence order
        if self.training and self.drop.p > 0:  # dropout drawn over the padded [S, T, K], as the padded twin
            h = _rows(self.drop(_padded(h, real_at, s, t)), real_at)
        out = F.relu(self.word_out(h))  # [W, H]                                    eq. 6
        return _padded(out, real_at, s, t)

    def embed_words_slow(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The padded twin of `embed_words`: every layer over all S x T positions, padding masked at the end."""
        lengths = lengths.to(tokens.device)
        mask = lengths_mask(lengths, tokens.shape[1])  # [S, T]
        x = self.drop(self.words(tokens))  # [S, T, E]
        e = F.relu(self.word_in(x)) * mask[..., None]  # [S, T, K]
        hf = self._recur(e, self.fwd)  # [S, T, K]
        hb = reverse_padded(self._recur(reverse_padded(e, lengths), self.bwd), lengths)
        out = F.relu(self.word_out(self.drop(hf + hb)))  # [S, T, H]
        return out * mask[..., None].to(out.dtype)

    def _recur_both(self, e: torch.Tensor, running: list[int]) -> torch.Tensor:
        """Both recurrences at once: h_t = relu(e_t + W h_{t-1} + b), h_0 = 0, with (W, b) of `self.fwd` over
        e[0] and of `self.bwd` over e[1]; e float [2, W, K] in step order (`_step_order`: step 0 of the running
        sentences, longest first, then step 1, ...) -> [2, W, K] in the same order. One batched product per step
        for the two directions, the bias added once, and the steps' inputs taken by one split (whose backward is
        one concatenation, where a slice per step would fill a zero [W, K] gradient per step)."""
        # [2, K, K] and [2, 1, K] in e's dtype (bf16 under autocast: cast once, not at every step)
        weight = torch.stack([self.fwd.weight.T, self.bwd.weight.T]).to(e.dtype)
        e = e + torch.stack([self.fwd.bias, self.bwd.bias])[:, None, :].to(e.dtype)
        steps = [n for n in running if n > 0]
        if not steps:
            return e
        h, out = None, []
        for x in e.split(steps, dim=1):  # [2, n, K] the sentences running at this step
            h = F.relu(x if h is None else x + torch.bmm(h[:, : x.shape[1]], weight))
            out.append(h)
        return torch.cat(out, 1)

    @staticmethod
    def _recur(e: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
        """h_t = relu(e_t + W h_{t-1} + b), h_0 = 0, over e [S, T, K] -> [S, T, K]."""
        h = torch.zeros_like(e[:, 0])
        out = []
        for t in range(e.shape[1]):
            h = F.relu(e[:, t] + lin(h))
            out.append(h)
        return torch.stack(out, 1)

    def forward(self, feats, tokens, lengths, boxes=None):
        """(feats [B, R, D], tokens [B, T], lengths [B], boxes [B, R, 4] or None) -> (v [B, R, H], s [B, T, H])."""
        return self.embed_regions(feats, boxes), self.embed_words(tokens, lengths)

    def word_region_scores(self, feats, region_mask, tokens, lengths, boxes=None) -> torch.Tensor:
        """For B aligned pairs (image b, sentence b): float [B, T, R] of v_i . s_t.

        feats float [B, R, D], region_mask bool [B, R] (True = real region), tokens long [B, T], lengths [B],
        boxes float [B, R, 4] (needed with `cfg.geometry`). Padded regions are -inf (for real words), padded
        words are 0 on the whole row.
        """
        v = self.embed_regions(feats, boxes)  # [B, R, H]
        s = self.embed_words(tokens, lengths)  # [B, T, H]
        dots = torch.einsum("bth,brh->btr", s, v)  # [B, T, R]
        wmask = lengths_mask(lengths.to(tokens.device), tokens.shape[1])  # [B, T]
        dots = dots.masked_fill(~region_mask.to(dots.device)[:, None, :], float("-inf"))
        return dots.masked_fill(~wmask[..., None], 0.0)
