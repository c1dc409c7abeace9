"""Self-critical sequence training of the full-frame generator (Rennie et al. 2017), after its cross-entropy epochs.

Each step takes `GenConfig.scst_images` training inputs, samples `scst_samples` captions of each from the model
(dropout off), scores every caption by CIDEr-D against its input's references (`generate.cider_reward`, document
frequencies of the training captions), and follows the policy gradient

    loss = - sum_{b,k} (r_bk - mean_{j != k} r_bj) sum_t log p(w_bkt | image_b, w_bk<t)  /  (sampled words)

with the leave-one-out mean of the other samples of the same input as the baseline (Luo 2020, "A Better Variant
of Self-Critical Sequence Training": no greedy decoding per step). The policy is the model's softmax with PAD and
START excluded (they are never a caption's word); UNK and an early END may be sampled and simply earn their
reward. The log-probabilities are recomputed with teacher forcing on the sampled words, in the same mode
(dropout off) in which they were sampled, so the gradient is that of the distribution that was sampled.

Dimensions: B inputs of a step, K samples per input, T longest sampled caption + 1, V vocabulary, Din input size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from dvsa.data import training
from dvsa.data.progress import progress as progress_bar
from dvsa.data.text import END_ID, PAD_ID, START_ID, Vocabulary
from dvsa.generate.cider_reward import CiderReward
from dvsa.generate.data import CaptionData
from dvsa.generate.model import CaptionModel, GenConfig

NEVER = (PAD_ID, START_ID)  # ids the policy never emits


def _mask(logits: torch.Tensor) -> torch.Tensor:
    """log-probabilities [.., V] of the policy: logits with PAD and START removed, renormalised."""
    logits = logits.float().clone()
    logits[..., list(NEVER)] = float("-inf")
    return F.log_softmax(logits, dim=-1)


@torch.no_grad()
def sample_policy(model: CaptionModel, feats: torch.Tensor, max_len: int, generator: torch.Generator) -> list[list[int]]:
    """feats float [B, Din] -> B sampled word-id lists, each ending in END unless cut after `max_len` words.
    The model's current mode (train / eval) is used as it is."""
    B = feats.shape[0]
    state = model.init_state(feats)
    prev = torch.full((B,), START_ID, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    words = []
    for _ in range(max_len):
        logp, state = model.step(prev, state)  # [B, V] log_softmax of the logits
        probs = _mask(logp).exp()
        w = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(feats.device)
        words.append(torch.where(done, PAD_ID, w))
        done = done | (w == END_ID)
        prev = w
        if bool(done.all()):
            break
    seqs = torch.stack(words, 1).tolist()
    return [s[: s.index(END_ID) + 1] if END_ID in s else [t for t in s if t != PAD_ID] for s in seqs]


def teacher_inputs(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled id lists (END included where they ended) -> inputs long [N, T] (START w..) and targets long
    [N, T] (w.. [END]), PAD 0."""
    T = max(len(s) for s in seqs)
    inp = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    tgt = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            inp[i, : len(s)] = torch.tensor([START_ID] + s[:-1])
            tgt[i, : len(s)] = torch.tensor(s)
    return inp, tgt


def sequence_logprobs(model: CaptionModel, feats: torch.Tensor, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Summed policy log-probability of each target sequence: float [N] (with autograd)."""
    logits = model(feats, inp, targets=tgt)  # [M, V], the real targets in (n, t) order
    logp = _mask(logits).gather(1, tgt[tgt != PAD_ID][:, None]).squeeze(1)  # [M]
    rows = torch.arange(tgt.shape[0], device=tgt.device)[:, None].expand_as(tgt)[tgt != PAD_ID]
    return torch.zeros(tgt.shape[0], device=logp.device).index_add(0, rows, logp)


def leave_one_out(rewards: np.ndarray) -> np.ndarray:
    """rewards [B, K] (K >= 2) -> advantages r_bk - mean_{j != k} r_bj."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, K >= 2], got {list(rewards.shape)}")
    K = rewards.shape[1]
    others = (rewards.sum(1, keepdims=True) - rewards) / (K - 1)
    return rewards - others


def scst_loss(logprobs: torch.Tensor, advantages: torch.Tensor, n_words: int) -> torch.Tensor:
    """-sum advantage * sequence log-probability / n_words (logprobs, advantages float [N])."""
    return -(advantages.to(logprobs) * logprobs).sum() / max(1, n_words)


def scst_epoch(model: CaptionModel, opt: torch.optim.Optimizer, data: CaptionData, reward: CiderReward,
               vocab: Vocabulary, cfg: GenConfig, epoch: int, step: int, device: torch.device,
               show: bool) -> tuple[float, int]:
    """One self-critical pass over the inputs of `data` that have references; returns (mean sampled reward, step).
    Seeded by (seed, epoch): a resumed run samples the same captions."""
    rows = np.array([i for i, k in enumerate(data.keys) if k in reward.refs])
    g = np.random.default_rng([cfg.seed, epoch, 7])
    order = rows[g.permutation(len(rows))]
    batches = [order[i : i + cfg.scst_images] for i in range(0, len(order), cfg.scst_images)]
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    K = cfg.scst_samples
    model.eval()  # dropout off: the sampled policy is the one differentiated (module doc)
    total, count = 0.0, 0
    bar = progress_bar(batches, total=len(batches), desc=f"self-critical {epoch + 1}", unit="batch", enabled=show)
    for b in bar:
        feats = torch.from_numpy(data.feats[b]).to(device).repeat_interleave(K, dim=0)  # [B K, Din]
        with training.autocast(device, cfg.amp, cfg.cpu_amp):
            seqs = sample_policy(model, feats, cfg.max_len, gen)
        keys = [data.keys[i] for i in b for _ in range(K)]
        r = reward.scores(keys, [" ".join(vocab.decode(s)) for s in seqs]).reshape(len(b), K)  # decode stops at END
        adv = torch.from_numpy(leave_one_out(r).reshape(-1)).float().to(device)
        inp, tgt = (x.to(device) for x in teacher_inputs(seqs))
        with training.autocast(device, cfg.amp, cfg.cpu_amp):
            lp = sequence_logprobs(model, feats, inp, tgt)
        loss = scst_loss(lp.float(), adv, int((tgt != PAD_ID).sum()))
        training.check_finite(float(loss.detach()), epoch, step + 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        training.clip_gradients(params, cfg.clip, cfg.clip_mode)
        opt.step()
        training.reclaim_threads()
        step += 1
        total += float(r.sum())
        count += r.size
        bar.set_postfix(reward=f"{total / count:.3f}")
    bar.close()
    return total / max(1, count), step
