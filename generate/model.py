"""The multimodal RNN of stage 2 (paper eqs. 13-15): a word-level language model whose first step is biased by
an image (or region) feature.

    b_v = W_hi x_img                                                        (13)
    h_t = f(W_hx x_t + W_hh h_{t-1} + b_h + 1(t = 1) b_v)      f = ReLU      (14)
    y_t = softmax(W_oh h_t + b_o)                                            (15)

h_0 = 0, x_1 is the embedding of START, the targets are the next words and the last target is END. The output
biases b_o start at the log frequency of each word (`frequency_bias`). An LSTM can replace the plain RNN
(`cell="lstm"`); `image_at` chooses how the image enters either cell:

* ``"bias"`` (the paper): W_hi x_img is added to the pre-activation (all four gates for the LSTM) at the first
  step only.
* ``"input"`` (neuraltalk's LSTM, Show and Tell): the image, embedded to the word size, is fed as an input step
  before START; that step's output is not a prediction.

`GenConfig` also configures the region-attention LSTM (``arch="attention"``, ``input="regions"``), which lives in
`generate.attention` with the same decoding interface.

Dimension glossary:
    B  batch (images, regions, or live beams)         T  words of a padded sentence (incl. START as input)
    D  per-region CNN feature size (FeatureStore.dim)  Din  model input size: D, or 2 D for "region+image"
    E  word embedding size                             H  hidden size
    G  pre-activation size: H (rnn) or 4 H (lstm)      V  vocabulary size (ids: PAD 0, START 1, END 2, UNK 3)
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from dvsa.data.dropout import Dropout
from dvsa.data.standardize import standardization, standardize
from dvsa.data.text import END_ID, PAD_ID, Vocabulary

ARCHS = ("mrnn", "attention")
CELLS = ("rnn", "lstm")
INPUTS = ("image", "region", "region+image", "regions")
IMAGE_AT = ("bias", "input")


@dataclass
class GenConfig:
    """Every default of stage 2 (model, training, decoding). CLI flags and JSON override these fields."""

    # --- model
    arch: str = "mrnn"  # "mrnn": this module's CaptionModel | "attention": generate.attention.AttentionModel, a
    #                     soft-attention LSTM over the image's regions (needs input="regions"; cell is ignored)
    cell: str = "rnn"  # "rnn" (paper, ReLU) | "lstm" (supplementary material: better)
    hidden: int = 512  # H (paper: 512)
    embed: int = 512  # E, word embedding size (learned from scratch)
    input: str = "image"  # "image" whole-image feature | "region" region feature | "region+image" concatenation
    #                       | "regions": the set of all region features of the image, whole image first [N, D]
    #                       (arch="attention" only)
    image_at: str = "bias"  # "bias" (paper eq. 14) | "input" (the image as a first input step)
    dropout: float = 0.5  # on the image feature, the word embeddings and the output layer's input
    feat_norm: str = "standardize"  # "standardize": per-dimension (x - mean) / std of the training inputs, kept
    #                                  in the model (CNN features are >= 0 with a large shared offset; raw, they
    #                                  make RMSprop's first steps on W_hi blow up) | "none": raw (the paper)
    att_dim: int = 512  # A, attention MLP size (arch="attention")
    att_gate: bool = True  # the gating scalar beta_t = sigmoid(w_b h_{t-1}) on the context (Show, Attend and Tell)
    att_lambda: float = 1.0  # weight of the doubly stochastic penalty sum_i (1 - sum_t alpha_ti)^2 per sentence,
    #                          added to the summed cross-entropy before dividing by the target words (as the paper)
    # --- vocabulary
    min_count: int = 5  # words seen fewer times in the training sentences become UNK (paper: 5)
    bias_floor: float = 0.5  # count given to never-seen targets (PAD, START, words without a count) for b_o
    # --- training
    optimizer: str = "rmsprop"  # "rmsprop" (paper) | "adam" | "sgd"
    lr: float = 2e-4  # RMSprop's first steps move each weight by ~lr / sqrt(1 - rmsprop_alpha) = 10 lr (no bias
    #                   correction): 1e-3 blew the loss up at step 2 with hidden 512 on the synthetic scenes
    rmsprop_alpha: float = 0.99  # RMSprop's smoothing constant (the decay of the squared-gradient average)
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    clip: float = 5.0  # gradient clipping threshold; 0 disables
    clip_mode: str = "value"  # "value" (elementwise, as the paper's stage 1) | "norm" (global L2 norm)
    schedule: str = "none"  # "none" | "step" (x lr_gamma every lr_step epochs) | "cosine" (to 0 over `epochs`)
    lr_step: int = 10
    lr_gamma: float = 0.5
    batch_size: int = 100  # (feature, sentence) pairs per optimiser step, over all processes together
    epochs: int = 30
    patience: int = 5  # early stopping: epochs without a better validation CIDEr; 0 disables
    val_images: int = 500  # validation images (or regions) decoded per epoch (greedy); 0 skips validation
    seed: int = 0
    # --- self-critical training (generate.scst), after the cross-entropy epochs, from their best epoch
    scst_epochs: int = 0  # epochs of CIDEr-D policy gradient (0: none); full-frame "mrnn" models only
    scst_lr: float = 2e-5  # its learning rate (the same optimiser, new state)
    scst_samples: int = 5  # captions sampled per input; the others' mean reward is each one's baseline
    scst_images: int = 50  # inputs per step (scst_images x scst_samples sampled captions)
    amp: bool = True  # bfloat16 autocast on a GPU (on the CPU only with cpu_amp)
    # bfloat16 autocast when training on a CPU that computes bf16 natively (avx512_bf16 / amx_bf16)
    cpu_amp: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    # --- decoding
    # beam size for captions (paper: 7); 1 = greedy. 15: the re-ranking below has more to choose from (held-out
    # photos: CIDEr 49.4 against 47.5 at beam 7); without it beam 15 is no better than 7 (40.2 against 40.1)
    beam: int = 15
    max_len: int = 20  # most decoding steps (END counts as one); longer captions are cut
    min_len: int = 1  # END is not allowed before this many words (1: no empty captions)
    # beam ranking: logprob / length**length_norm (0 = raw sum). 1 by default: with the raw sum, beam 7 preferred
    # short captions and scored below greedy on the synthetic scenes (BLEU-1 38 vs 51 with 1).
    length_norm: float = 1.0
    # each word's log-probability minus this weight x its log-probability with no image (the model on its mean
    # input), renormalised (generate.decode, "specific captions"); 0 decodes the model as it is. On the Flickr8k
    # pipeline's 500 held-out train photos (beam 7, its gen_full): 0 / 0.1 / 0.2 / 0.3 / 0.5 gave CIDEr 39.6 /
    # 39.8 / 41.4 / 40.9 / 35.4, BLEU-4 18.2 / 18.3 / 18.9 / 18.5 / 15.5 and 259 / 278 / 322 / 334 / 388 distinct
    # captions of 500 (docs/experiments.md)
    prior_weight: float = 0.2
    # re-rank the beam's finished captions by CIDEr-D against the captions of the consensus_k nearest training
    # images (generate.consensus; 0: the beam's best as it is). Needs the bank.pt that train_generator writes beside
    # a full-frame model. On the Flickr8k pipeline's 500 held-out train photos (beam 7, its gen_full), k 10 / 30 /
    # 60 gave CIDEr 46.1 / 45.6 / 45.5 against 40.1 without (BLEU-4 19.6 / 19.6 / 19.9 against 18.7)
    consensus_k: int = 10
    # + this x the caption's log-probability per word in that ranking (0.5 / 1 / 2 at k 10: CIDEr 45.2 / 45.2 / 44.0)
    consensus_weight: float = 0.0
    # + this x the run's aligner vote (generate.align_vote: its whole-frame image-caption score less the hub
    # correction over the retrieval stage's bank of train images, at align_vote_beta), when the generator is a run
    # folder's. Held-out photos (gen_full of the default Flickr8k run, k 10), CIDEr / BLEU-4 / METEOR: beam 7 at 0
    # / 0.1 / 0.2 / 0.3 / 0.5: 46.1 / 47.5 / 47.8 / 47.5 / 47.0; beam 15 at 0 / 0.1 / 0.2 / 0.3 / 0.4: 44.9 / 48.7 /
    # 49.1 / 49.4 / 49.1 (at 0.3: BLEU-4 20.6, METEOR 20.1; beam 7 at 0: 19.6, 19.7)
    align_vote: float = 0.3
    align_vote_beta: float = 1.5  # the inverted softmax's beta (the annotation beta that run's retrieval stage chose)

    def validate(self) -> "GenConfig":
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if (self.arch == "attention") != (self.input == "regions"):
            raise ValueError(f"arch='attention' goes with input='regions' (and only it), got arch={self.arch!r} "
                             f"input={self.input!r}: set both, e.g. --set gen.arch=attention --set gen.input=regions")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.image_at not in IMAGE_AT:
            raise ValueError(f"image_at must be one of {IMAGE_AT}, got {self.image_at!r}")
        if self.feat_norm not in ("standardize", "none"):
            raise ValueError(f"feat_norm must be 'standardize' or 'none', got {self.feat_norm!r}")
        if self.clip_mode not in ("value", "norm"):
            raise ValueError(f"clip_mode must be 'value' or 'norm', got {self.clip_mode!r}")
        if self.schedule not in ("none", "step", "cosine"):
            raise ValueError(f"schedule must be none|step|cosine, got {self.schedule!r}")
        if self.scst_epochs and (self.arch != "mrnn" or self.input == "regions"):
            raise ValueError(f"scst_epochs needs the multimodal RNN (arch='mrnn'), got arch={self.arch!r}")
        if self.scst_epochs < 0 or self.scst_samples < 2 or self.scst_images < 1:
            raise ValueError(f"scst_epochs must be >= 0, scst_samples >= 2 and scst_images >= 1, got "
                             f"{self.scst_epochs}, {self.scst_samples}, {self.scst_images}")
        if self.consensus_k < 0 or self.consensus_weight < 0 or self.align_vote < 0 or not self.align_vote_beta > 0:
            raise ValueError(f"consensus_k, consensus_weight and align_vote must be >= 0 and align_vote_beta > 0, got "
                             f"{self.consensus_k}, {self.consensus_weight}, {self.align_vote}, {self.align_vote_beta}")
        if not 0.0 <= self.prior_weight < 1.0:
            raise ValueError(f"prior_weight must be in [0, 1), got {self.prior_weight}")
        if self.optimizer not in ("rmsprop", "adam", "sgd"):
            raise ValueError(f"optimizer must be rmsprop|adam|sgd, got {self.optimizer!r}")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "GenConfig":
        """Build from a (possibly older) config dict; unknown keys raise, missing keys take the defaults."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GenConfig fields: {sorted(unknown)}")
        return cls(**d).validate()


def input_dim(feat_dim: int, mode: str) -> int:
    """Din for a per-region feature size D: 2 D when the region is concatenated with the whole image."""
    return 2 * feat_dim if mode == "region+image" else feat_dim


def frequency_bias(vocab: Vocabulary, n_sentences: int, extra_counts: dict[str, int] | None = None,
                   floor: float = 0.5) -> torch.Tensor:
    """float32 [V]: log relative frequency of every word as a *target*, the paper's initial b_o.

    Counts come from `vocab.counts`; END occurs once per sentence (`n_sentences`); `extra_counts` may add
    counts the vocabulary does not keep (e.g. UNK = tokens of rare words). Words without a count (PAD, START,
    UNK unless given) get `floor`.
    """
    counts = torch.full((len(vocab),), float(floor))
    for w, n in {**vocab.counts, **(extra_counts or {})}.items():
        if w in vocab.stoi and n > 0:
            counts[vocab.stoi[w]] = float(n)
    counts[END_ID] = float(max(n_sentences, floor))
    return torch.log(counts / counts.sum())


def init_embedding_and_linears(embed: nn.Embedding, linears) -> None:
    """Word embeddings N(0, 0.1) with the padding row 0; each linear layer (None skipped) Xavier-uniform with
    zero bias."""
    nn.init.normal_(embed.weight, std=0.1)
    with torch.no_grad():
        embed.weight[PAD_ID].zero_()
    for lin in linears:
        if lin is None:
            continue
        nn.init.xavier_uniform_(lin.weight)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)


def init_lstm(w_h: nn.Linear, w_x: nn.Linear, hidden: int) -> None:
    """LSTM gates (i, f, g, o stacked in w_h [4H, H] and w_x's bias [4H]): each gate's recurrent block starts
    orthogonal, the forget gate's bias at 1."""
    for k in range(4):
        nn.init.orthogonal_(w_h.weight.data.view(4, hidden, hidden)[k])
    with torch.no_grad():
        w_x.bias[hidden : 2 * hidden].fill_(1.0)  # forget gate bias 1


def copy_output_bias(out: nn.Linear, bias: torch.Tensor) -> None:
    """b_o of the output layer `out` [V, H] := bias float [V] (e.g. `frequency_bias`)."""
    if bias.shape != (out.out_features,):
        raise ValueError(f"output bias must be [{out.out_features}], got {list(bias.shape)}")
    with torch.no_grad():
        out.bias.copy_(bias)


class CaptionModel(nn.Module):
    """Multimodal RNN / LSTM. `feat_dim` is the per-region feature size D; the input is Din = input_dim(D, mode).

    forward (teacher forcing, for training):
        feats  float [B, Din]   image / region input vectors
        tokens long  [B, T]     START w1 .. wn, then PAD (0)
        ->     float [B, T, V]  logits; position t predicts tokens[t + 1] (the last real one predicts END)
    decoding:
        state = model.init_state(feats [B, Din])
        logprobs [B, V], state = model.step(prev_tokens [B] long, state)     # first call: prev = START
    A state is a dict of tensors with leading dim B (or None), so `reorder_state` can follow beams.
    In train mode dropout applies to the image feature, word embeddings and the output layer's input.
    """

    def __init__(self, cfg: GenConfig, vocab_size: int, feat_dim: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.vocab_size, self.feat_dim = vocab_size, feat_dim
        self.input_dim = input_dim(feat_dim, cfg.input)
        H, E = cfg.hidden, cfg.embed
        self.gate = 4 * H if cfg.cell == "lstm" else H  # G
        self.embed = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)  # x_t = W_e I_t
        self.w_x = nn.Linear(E, self.gate)  # W_hx (its bias is b_h)
        self.w_h = nn.Linear(H, self.gate, bias=False)  # W_hh
        if cfg.image_at == "bias":
            self.w_img = nn.Linear(self.input_dim, self.gate, bias=False)  # W_hi, eq. 13
        else:
            self.w_img = nn.Linear(self.input_dim, E)  # image embedded as a word-sized input
        self.out = nn.Linear(H, vocab_size)  # W_oh, b_o
        self.drop = Dropout(cfg.dropout)
        # input normalisation x -> (x - feat_mean) * feat_scale; identity until set_feature_norm
        self.register_buffer("feat_mean", torch.zeros(self.input_dim))
        self.register_buffer("feat_scale", torch.ones(self.input_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        H = self.cfg.hidden
        init_embedding_and_linears(self.embed, (self.w_x, self.w_img, self.out))
        if self.cfg.cell == "rnn":
            # A ReLU recurrence stays stable when W_hh starts near a scaled identity (Le et al. 2015 "IRNN").
            nn.init.eye_(self.w_h.weight)
            self.w_h.weight.data.mul_(0.5)
        else:
            init_lstm(self.w_h, self.w_x, H)

    def set_output_bias(self, bias: torch.Tensor) -> None:
        """Initialise b_o (float [V]), e.g. with `frequency_bias`."""
        copy_output_bias(self.out, bias)

    def set_feature_norm(self, feats: torch.Tensor, eps: float = 1e-2) -> None:
        """Standardise inputs with the statistics of training inputs feats float [N, Din] (cfg.feat_norm)."""
        mean, scale = standardization(feats, self.input_dim, eps)
        with torch.no_grad():
            self.feat_mean.copy_(mean)
            self.feat_scale.copy_(scale)

    # --- one recurrence step, shared by training and decoding
    def _cell(self, pre: torch.Tensor, state: dict) -> dict:
        """pre [B, G] = W_hx x_t + b_h (+ b_v at t = 1) -> new state (without the pending image bias)."""
        pre = pre + self.w_h(state["h"])  # [B, G]
        if self.cfg.cell == "rnn":
            return {"h": F.relu(pre), "c": None, "bias": None}
        i, f, g, o = pre.chunk(4, dim=-1)  # each [B, H]
        c = torch.sigmoid(f) * state["c"] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return {"h": h, "c": c, "bias": None}

    def _check_feats(self, feats: torch.Tensor) -> None:
        if feats.dim() != 2 or feats.shape[1] != self.input_dim:
            raise ValueError(f"feats must be [B, {self.input_dim}] (input={self.cfg.input!r}), got {list(feats.shape)}")

    def init_state(self, feats: torch.Tensor) -> dict:
        """feats float [B, Din] -> state before START: h_0 = 0 (c_0 = 0) and the image bias b_v [B, G] pending
        for the first step; with image_at="input" the image step has already been run (no pending bias)."""
        self._check_feats(feats)
        B, H = feats.shape[0], self.cfg.hidden
        zeros = feats.new_zeros(B, H)
        feats = standardize(feats, self.feat_mean, self.feat_scale)  # identity unless set_feature_norm was called
        state = {"h": zeros, "c": zeros if self.cfg.cell == "lstm" else None, "bias": None}
        img = self.w_img(self.drop(feats))  # [B, G] (bias) or [B, E] (input)
        if self.cfg.image_at == "bias":
            state["bias"] = img
            return state
        return self._cell(self.w_x(img), state)

    def step(self, prev_tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """prev_tokens long [B] -> (logprobs float32 [B, V] of the next word, new state)."""
        pre = self.w_x(self.drop(self.embed(prev_tokens)))  # [B, G]
        if state["bias"] is not None:
            pre = pre + state["bias"]
        state = self._cell(pre, state)
        logits = self.out(self.drop(state["h"]))  # [B, V]
        return F.log_softmax(logits.float(), dim=-1), state

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: feats float [B, Din], tokens long [B, T] (START first, PAD 0) -> logits [B, T, V].

        With targets long [B, T] (PAD 0): only the logits of the real targets, float [N, V] in (b, t) order
        (`real_outputs`); the output layer, most of the step's work, then skips the padding."""
        if tokens.dim() != 2 or tokens.shape[0] != feats.shape[0]:
            raise ValueError(f"tokens must be [B={feats.shape[0]}, T], got {list(tokens.shape)}")
        state = self.init_state(feats)
        pre = self.w_x(self.drop(self.embed(tokens)))  # [B, T, G], all steps at once
        hs = []
        for t in range(tokens.shape[1]):
            p = pre[:, t]
            if state["bias"] is not None:
                p = p + state["bias"]  # b_v only at t = 1
            state = self._cell(p, state)
            hs.append(state["h"])
        h = torch.stack(hs, dim=1)  # [B, T, H]
        return self.out(real_outputs(self.drop(h), targets))  # [B, T, V] or [N, V]


def real_outputs(h: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """h [B, T, H] -> the rows whose target is a real word (or END), [N, H] in (b, t) order; h itself when
    targets is None. Dropout is applied before, over all of h, so a step draws the same masks either way."""
    return h if targets is None else h[targets != PAD_ID]


def reorder_state(state: dict, index: torch.Tensor) -> dict:
    """Select rows of every tensor of a state (beam bookkeeping): index long [B'] -> state with leading dim B'."""
    return {k: (v.index_select(0, index) if v is not None else None) for k, v in state.items()}


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """Cross-entropy of logits [B, T, V] against targets long [B, T] (PAD 0 ignored), or of the real targets'
    logits [N, V] (`forward(..., targets)`) against the same targets [B, T].

    Summed over real target tokens and divided by `normalizer` (default: their number). Training with several
    processes passes the global token count of the whole batch, so that gradients averaged by DDP equal
    single-process gradients exactly.
    """
    if logits.dim() == 2:  # real targets only
        flat, gold = logits.float(), targets[targets != PAD_ID]
    else:
        flat, gold = logits.float().flatten(0, 1), targets.flatten()
    if flat.shape[0] != gold.shape[0]:
        raise ValueError(f"logits {list(logits.shape)} do not match targets {list(targets.shape)}")
    total = F.cross_entropy(flat, gold, ignore_index=PAD_ID, reduction="sum")
    n = normalizer if normalizer is not None else max(1, int((targets != PAD_ID).sum()))
    return total / n

