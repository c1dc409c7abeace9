"""A region-attention LSTM caption generator (Show, Attend and Tell, Xu et al. 2015, soft attention) over the
region vectors of an image (`GenConfig.arch = "attention"`, `GenConfig.input = "regions"`).

The annotation set of an image is its N region features a_1 .. a_N of the feature store (row 0 is the whole
image, then the detected regions; padded rows are masked out). Each step attends over them:

    v_i     = W_v a_i                                   projected regions                       [N, H]
    e_ti    = w_e^T tanh(W_k v_i + W_q h_{t-1}) + b_e   additive (Bahdanau) attention scores      [N]
    alpha_t = softmax_i(e_t)   (0 on padded rows)       attention weights, sum 1 over real rows  [N]
    z_t     = beta_t sum_i alpha_ti v_i,  beta_t = sigmoid(w_b^T h_{t-1} + b_b)   (gate, optional; else 1)
    h_t, c_t = LSTM([E y_{t-1}; z_t], h_{t-1}, c_t-1)
    p(y_t)  = softmax(W_o h_t + b_o)
    h_0 = tanh(W_h0 mean_i a_i),  c_0 = tanh(W_c0 mean_i a_i)        (mean over real rows)

Training adds the doubly stochastic penalty lambda * sum_i (1 - sum_t alpha_ti)^2 (`doubly_stochastic`, summed
over the real words t, incl. END, and the real regions i), which asks every region to be looked at about once
over a caption. The attention weight of the step that emits a word is "where that word looked".

The interface is `CaptionModel`'s (so `generate.decode` and `generate.train` drive both), with feats a set:
    forward(feats float [B, N, D], tokens long [B, T], mask bool [B, N] | None, return_attention=False)
        -> logits [B, T, V]  (and alphas float [B, T, N] with return_attention)
    state = init_state(feats [B, N, D], mask [B, N] | None)
    logprobs [B, V], state = step(prev_tokens [B], state)     state["alpha"]: [B, N] weights of that step
A state is a dict of tensors with leading dim B, so `model.reorder_state` can follow beams.

Dimension glossary: B batch, N regions of the set (whole image first, padded), D region feature size,
H hidden size (also the projected region size), E word embedding size, A attention size, T words, V vocab.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from dvsa.data.dropout import Dropout
from dvsa.data.standardize import standardization, standardize
from dvsa.data.text import PAD_ID
from dvsa.generate.model import (
    GenConfig,
    copy_output_bias,
    init_embedding_and_linears,
    init_lstm,
    real_outputs,
)


class AttentionModel(nn.Module):
    """Soft-attention LSTM over a set of region vectors (module doc). `feat_dim` is the region feature size D.
    In train mode dropout applies to the projected regions, the word embeddings and the output layer's input."""

    feat_ndim = 2  # one input is a [N, D] set (CaptionModel: a [Din] vector)

    def __init__(self, cfg: GenConfig, vocab_size: int, feat_dim: int):
        super().__init__()
        cfg.validate()
        if cfg.arch != "attention":
            raise ValueError(f"AttentionModel needs arch='attention', got {cfg.arch!r}")
        self.cfg = cfg
        self.vocab_size, self.feat_dim = vocab_size, feat_dim
        self.input_dim = feat_dim  # per region
        H, E, A = cfg.hidden, cfg.embed, cfg.att_dim
        self.embed = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        self.w_v = nn.Linear(feat_dim, H)  # region projection
        self.w_k = nn.Linear(H, A, bias=False)  # attention keys of the regions
        self.w_q = nn.Linear(H, A, bias=False)  # attention query of h_{t-1}
        self.w_e = nn.Linear(A, 1)  # score
        self.w_b = nn.Linear(H, 1) if cfg.att_gate else None  # gating scalar beta
        self.init_h = nn.Linear(feat_dim, H)
        self.init_c = nn.Linear(feat_dim, H)
        self.w_x = nn.Linear(E + H, 4 * H)  # LSTM input weights (word; context), bias b_h
        self.w_h = nn.Linear(H, 4 * H, bias=False)
        self.out = nn.Linear(H, vocab_size)
        self.drop = Dropout(cfg.dropout)
        self.register_buffer("feat_mean", torch.zeros(feat_dim))
        self.register_buffer("feat_scale", torch.ones(feat_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        H = self.cfg.hidden
        init_embedding_and_linears(self.embed, (self.w_v, self.w_k, self.w_q, self.w_e, self.w_b, self.init_h,
                                                self.init_c, self.w_x, self.out))
        init_lstm(self.w_h, self.w_x, H)

    def set_output_bias(self, bias: torch.Tensor) -> None:
        """Initialise b_o (float [V]), e.g. with `model.frequency_bias`."""
        copy_output_bias(self.out, bias)

    def set_feature_norm(self, feats: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-2) -> None:
        """Standardise region features with the statistics of the real rows of feats float [F, N, D]
        (mask bool [F, N], None = all rows real)."""
        feats = torch.as_tensor(feats)
        rows = feats.reshape(-1, self.feat_dim) if mask is None else feats[torch.as_tensor(mask, dtype=torch.bool)]
        mean, scale = standardization(rows, self.feat_dim, eps)
        with torch.no_grad():
            self.feat_mean.copy_(mean)
            self.feat_scale.copy_(scale)

    def _check(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[2] != self.feat_dim:
            raise ValueError(f"feats must be [B, N, {self.feat_dim}] (arch='attention'), got {list(feats.shape)}")
        if mask is None:
            return torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        mask = torch.as_tensor(mask, dtype=torch.bool, device=feats.device)
        if mask.shape != feats.shape[:2]:
            raise ValueError(f"mask must be {list(feats.shape[:2])}, got {list(mask.shape)}")
        if not bool(mask.any(1).all()):
            raise ValueError("every image needs at least one real region in its mask")
        return mask

    def init_state(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """feats float [B, N, D], mask bool [B, N] (True = real row) -> the state before START."""
        mask = self._check(feats, mask)
        x = standardize(feats, self.feat_mean, self.feat_scale)  # [B, N, D]
        x = x * mask[..., None]  # padded rows are exactly 0 and never weighed
        mean = x.sum(1) / mask.sum(1, keepdim=True).to(x.dtype)  # [B, D]
        v = self.drop(self.w_v(x))  # [B, N, H]
        return {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean)), "ctx": v,
                "keys": self.w_k(v), "mask": mask, "alpha": None}  # keys [B, N, A]

    def attend(self, h: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h [B, H], keys [B, N, A], mask [B, N] -> alpha float [B, N]: softmax over real rows, 0 on padded."""
        e = self.w_e(torch.tanh(keys + self.w_q(h)[:, None])).squeeze(-1)  # [B, N]
        e = e.masked_fill(~mask, float("-inf"))
        return torch.softmax(e, dim=-1)

    def _advance(self, emb: torch.Tensor, state: dict) -> dict:
        """emb [B, E] (dropped-out embedding of y_{t-1}) -> new state with h, c and this step's alpha."""
        h, c = state["h"], state["c"]
        alpha = self.attend(h, state["keys"], state["mask"])  # [B, N]
        z = torch.bmm(alpha[:, None], state["ctx"]).squeeze(1)  # [B, H]
        if self.w_b is not None:
            z = torch.sigmoid(self.w_b(h)) * z
        pre = self.w_x(torch.cat([emb, z], dim=-1)) + self.w_h(h)  # [B, 4H]
        i, f, g, o = pre.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return {**state, "h": h, "c": c, "alpha": alpha}

    def step(self, prev_tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """prev_tokens long [B] -> (logprobs float32 [B, V] (float64 for a float64 model), new state)."""
        state = self._advance(self.drop(self.embed(prev_tokens)), state)
        logits = self.out(self.drop(state["h"]))  # [B, V]
        return F.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=-1), state

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                return_attention: bool = False, targets: torch.Tensor | None = None):
        """Teacher forcing: feats [B, N, D], tokens long [B, T] (START first, PAD 0), mask [B, N] ->
        logits [B, T, V] (and alphas [B, T, N] with return_attention). With targets long [B, T]: only the real
        targets' logits [N, V] (`generate.model.real_outputs`; alphas stay [B, T, N])."""
        if tokens.dim() != 2 or tokens.shape[0] != feats.shape[0]:
            raise ValueError(f"tokens must be [B={feats.shape[0]}, T], got {list(tokens.shape)}")
        state = self.init_state(feats, mask)
        emb = self.drop(self.embed(tokens))  # [B, T, E]
        hs, alphas = [], []
        for t in range(tokens.shape[1]):
            state = self._advance(emb[:, t], state)
            hs.append(state["h"])
            alphas.append(state["alpha"])
        logits = self.out(real_outputs(self.drop(torch.stack(hs, dim=1)), targets))  # [B, T, V] or [N, V]
        return (logits, torch.stack(alphas, dim=1)) if return_attention else logits


def doubly_stochastic(alphas: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                      lam: float = GenConfig.att_lambda) -> torch.Tensor:
    """lam * sum_b sum_i (1 - sum_t alpha_bti)^2 (a sum over the batch, not a mean).

    alphas float [B, T, N]; targets long [B, T] (the steps whose target is PAD do not count); mask bool [B, N]
    (padded regions do not count; None = all real).
    """
    steps = (targets != PAD_ID).to(alphas.dtype)  # [B, T]
    cover = (alphas * steps[..., None]).sum(1)  # [B, N]
    pen = (1.0 - cover) ** 2
    if mask is not None:
        pen = pen * mask.to(pen.dtype)
    return lam * pen.sum()
