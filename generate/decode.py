"""Decoding a `CaptionModel`: greedy (argmax), sampling, and beam search, all batched over images.

Every decoder takes feats float [B, Din] and returns, per image, ``(tokens, logprob)`` pairs: `tokens` a list of
word ids without START and END, `logprob` the model's summed log-probability of those tokens *and* of END when
the caption ended (float, natural log). PAD, START and UNK are never generated, nor END before `min_len` words
(default 1: no empty caption). Decoding runs at most `max_len` steps (END counts as one); a caption still open
after `max_len` steps is returned as it is (cut, no END). Defaults come from `GenConfig`.

Beam search, as defined by `beam_search_single` (the obvious one-image version) and reproduced by the batched
`beam_search`: keep up to K live hypotheses. At every step each live hypothesis is extended by every word; the
candidates are ranked by their summed log-probability. Candidates ending in END that rank among the first K
are finished; the best K candidates that do not end in END become the new live hypotheses. An image is done
when it has K finished hypotheses (or after `max_len` steps, when its live hypotheses are added as they are).
The finished hypotheses are returned best first by ``logprob / length ** length_norm`` (length = tokens + END;
``length_norm = 0`` ranks by the raw sum). With K = 1 this is exactly greedy decoding.

The attention generator (`generate.attention.AttentionModel`) decodes the same way: its feats are region sets
float [B, N, D] with `mask` bool [B, N] (True on real rows; None = all real), and its state carries the regions
and the step's attention weights. With ``attention=True`` every hypothesis gets a third element, the weights of
the steps that emitted its words: float [L, N] (L = tokens + 1 with END, the last row END's; tokens when cut).

Specific captions: with `GenConfig.prior_weight` w > 0 every decoder draws each word from
``log_softmax(log p(word | image, prefix) - w log p(word | mean input, prefix))``, the same model run a second
time on its training inputs' mean (which its standardisation maps to 0: no image at all), so that words any
image would get lose to the words of this one (the anti-language-model of Li et al. 2016, "A
Diversity-Promoting Objective Function for Neural Conversation Models", eq. 4 with the image-free caption
model as the language model). The returned logprob is then under that distribution.

Dimension glossary: B images, K beam size, V vocabulary, Din model input size (or N x D, a region set),
N regions of a set, n images still being decoded.
"""
from __future__ import annotations

import contextlib

import torch
from dvsa.data.text import END_ID, PAD_ID, START_ID, UNK_ID
from dvsa.generate.model import CaptionModel, GenConfig, reorder_state

Hypothesis = tuple[list[int], float]  # (tokens, logprob); with attention=True also alphas float [L, N]


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """Eval mode (no dropout) and no autograd for the block; the model's previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _prepare(model: CaptionModel, feats, mask=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """feats as a batch on the model's device and dtype (one input gets a batch dim), and mask as bool."""
    p = next(model.parameters())
    feats = torch.as_tensor(feats).to(device=p.device, dtype=p.dtype)
    if feats.dim() == getattr(model, "feat_ndim", 1):
        feats = feats[None]
    if mask is not None:
        mask = torch.as_tensor(mask).to(device=p.device, dtype=torch.bool)
        if mask.dim() == 1:
            mask = mask[None]
    return feats, mask


PRIOR = "prior."  # state keys of the image-free stream (GenConfig.prior_weight)


def prior_weight(model) -> float:
    """The model's `GenConfig.prior_weight` (0: decode the model as it is)."""
    return float(getattr(getattr(model, "cfg", None), "prior_weight", 0.0) or 0.0)


def _init(model: CaptionModel, feats: torch.Tensor, mask: torch.Tensor | None) -> dict:
    state = model.init_state(feats) if mask is None else model.init_state(feats, mask)
    if prior_weight(model):  # the same model fed its training inputs' mean: what it says of any image
        blank = model.feat_mean.to(feats.dtype).expand_as(feats)
        prior = model.init_state(blank) if mask is None else model.init_state(blank, mask)
        state = {**state, **{PRIOR + k: v for k, v in prior.items()}}
    return state


def _model_step(model: CaptionModel, prev: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
    """model.step, or with `prior_weight` w > 0: log_softmax(log p(w | image) - w log p(w | mean input))."""
    w = prior_weight(model)
    if not w:
        return model.step(prev, state)
    own = {k: v for k, v in state.items() if not k.startswith(PRIOR)}
    prior = {k[len(PRIOR):]: v for k, v in state.items() if k.startswith(PRIOR)}
    logp, own = model.step(prev, own)
    prior_logp, prior = model.step(prev, prior)
    logp = torch.log_softmax(logp - w * prior_logp, dim=-1)
    return logp, {**own, **{PRIOR + k: v for k, v in prior.items()}}


def _alphas(state: dict, attention: bool) -> torch.Tensor | None:
    if not attention:
        return None
    if state.get("alpha") is None:
        raise ValueError("attention=True needs a model that attends (GenConfig.arch='attention')")
    return state["alpha"]


def _step(model: CaptionModel, prev: torch.Tensor, state: dict, t: int, min_len: int) -> tuple[torch.Tensor, dict]:
    """model.step at step t (0-based), with PAD, START and UNK (never a valid next word: a caption says a word
    or nothing), and END before `min_len` words, given log-probability -inf."""
    logp, state = _model_step(model, prev, state)
    logp[:, PAD_ID] = float("-inf")
    logp[:, START_ID] = float("-inf")
    logp[:, UNK_ID] = float("-inf")
    if t < min_len:
        logp[:, END_ID] = float("-inf")
    return logp, state


def _check(beam_size: int, max_len: int) -> None:
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")


def _alpha(length_norm) -> float:
    return 1.0 if length_norm is True else float(length_norm or 0.0)


def _final_score(logprob: float, length: int, alpha: float) -> float:
    return logprob / (max(1, length) ** alpha) if alpha else logprob


def greedy(model: CaptionModel, feats, max_len: int = GenConfig.max_len, min_len: int = GenConfig.min_len,
           mask=None, attention: bool = False) -> list[Hypothesis]:
    """Argmax decoding. feats float [B, Din] -> B (tokens, logprob) (module doc for mask and attention)."""
    _check(1, max_len)
    return _sample_loop(model, feats, max_len, min_len, lambda logp: logp.argmax(-1), mask, attention)


def sample(model: CaptionModel, feats, max_len: int = GenConfig.max_len, temperature: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None, min_len: int = GenConfig.min_len, mask=None,
           attention: bool = False) -> list[Hypothesis]:
    """Sample each word from softmax(logits / temperature), restricted to the top_k words when top_k > 0.

    The returned logprob is under the model itself (temperature 1, no top-k). `generator` makes it repeatable.
    """
    _check(1, max_len)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def pick(logp: torch.Tensor) -> torch.Tensor:
        logits = logp / temperature  # [n, V]
        if top_k and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]  # [n, 1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if generator is not None and generator.device != probs.device:
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(probs.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _sample_loop(model, feats, max_len, min_len, pick, mask, attention)


def _sample_loop(model, feats, max_len, min_len, pick, mask=None, attention=False):
    with _eval_mode(model):
        feats, mask = _prepare(model, feats, mask)
        B = feats.shape[0]
        state = _init(model, feats, mask)
        prev = torch.full((B,), START_ID, dtype=torch.long, device=feats.device)
        done = torch.zeros(B, dtype=torch.bool, device=feats.device)
        total = torch.zeros(B, dtype=torch.float64, device=feats.device)
        words, alphas = [], []
        for t in range(max_len):
            logp, state = _step(model, prev, state, t, min_len)  # [B, V]
            if attention:
                alphas.append(_alphas(state, attention).cpu())  # [B, N]
            w = pick(logp)  # [B]
            total += torch.where(done, 0.0, logp.gather(1, w[:, None]).squeeze(1).double())
            words.append(torch.where(done, END_ID, w))
            done = done | (w == END_ID)
            prev = w
            if bool(done.all()):
                break
        seqs = torch.stack(words, 1).tolist() if words else [[] for _ in range(B)]
        att = torch.stack(alphas, 1) if attention else None  # [B, steps, N]
        out = []
        for b, (seq, lp) in enumerate(zip(seqs, total.tolist())):
            toks = seq[: seq.index(END_ID)] if END_ID in seq else seq
            steps = len(toks) + (END_ID in seq)
            out.append((toks, lp, att[b, :steps]) if attention else (toks, lp))
        return out


def beam_search(model: CaptionModel, feats, beam_size: int = GenConfig.beam, max_len: int = GenConfig.max_len,
                length_norm: float | bool = GenConfig.length_norm, min_len: int = GenConfig.min_len, mask=None,
                attention: bool = False) -> list[list[Hypothesis]]:
    """Batched beam search. feats float [B, Din] -> per image up to `beam_size` (tokens, logprob), best first.

    All live beams of all images still being decoded go through one `model.step` call per word; images that
    are done leave the batch. The beams carry the model's state (an attention model's regions and LSTM state)
    and, with `attention`, the attention weights of their words (module doc).
    """
    K, norm = int(beam_size), _alpha(length_norm)
    _check(K, max_len)
    with _eval_mode(model):
        feats, mask = _prepare(model, feats, mask)
        B, dev = feats.shape[0], feats.device
        # (score, tokens, logprob, alphas or None)
        finished: list[list[tuple[float, list[int], float, torch.Tensor | None]]] = [[] for _ in range(B)]
        active = list(range(B))  # original index of each row group still decoding
        state = reorder_state(_init(model, feats, mask), torch.arange(B, device=dev).repeat_interleave(K))  # n*K
        ahist = None  # [n, K, t, N] attention weights of the words so far (attention=True)
        scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=dev)  # [n, K]
        scores[:, 0] = 0.0  # one live hypothesis (the empty one) per image at the start
        hist = torch.zeros(B, K, 0, dtype=torch.long, device=dev)  # [n, K, t] words so far
        prev = torch.full((B * K,), START_ID, dtype=torch.long, device=dev)
        for t in range(max_len):
            n = len(active)
            logp, state = _step(model, prev, state, t, min_len)  # [n*K, V]
            V = logp.shape[-1]
            alpha = _alphas(state, attention)  # [n*K, N] or None
            if alpha is not None:
                alpha = alpha.view(n, K, -1)
                if ahist is None:
                    ahist = alpha.new_zeros(n, K, 0, alpha.shape[-1])
            cand = (scores[:, :, None] + logp.view(n, K, V).double()).view(n, K * V)  # [n, K*V]
            top_v, top_i = cand.topk(min(2 * K, K * V), dim=-1)  # [n, 2K], best first
            beam, word = top_i // V, top_i % V
            is_end = word == END_ID
            finite = torch.isfinite(top_v)
            # live: the first K finite non-END candidates, in rank order
            keep = finite & ~is_end
            order = torch.cumsum(keep.long(), dim=1)
            keep = keep & (order <= K)
            # gather the chosen K slots per image (pad with dead slots when fewer than K are available)
            rank = torch.where(keep, order - 1, K)  # slot of each kept candidate; K = discard
            new_scores = torch.full((n, K + 1), float("-inf"), dtype=torch.float64, device=dev)
            new_beam = torch.zeros(n, K + 1, dtype=torch.long, device=dev)
            new_word = torch.full((n, K + 1), END_ID, dtype=torch.long, device=dev)
            new_scores.scatter_(1, rank, torch.where(keep, top_v, float("-inf")))
            new_beam.scatter_(1, rank, torch.where(keep, beam, 0))
            new_word.scatter_(1, rank, torch.where(keep, word, END_ID))
            # finished: END candidates ranked among the first K
            fin = is_end & finite
            fin[:, K:] = False
            if bool(fin.any()):
                for r, c in fin.nonzero().tolist():
                    b = int(beam[r, c])
                    toks = hist[r, b].tolist()
                    lp = float(top_v[r, c])
                    att = torch.cat([ahist[r, b], alpha[r, b, None]]).cpu() if alpha is not None else None
                    finished[active[r]].append((_final_score(lp, len(toks) + 1, norm), toks, lp, att))
            scores, beam, word = new_scores[:, :K], new_beam[:, :K], new_word[:, :K]
            hist = torch.cat([hist.gather(1, beam[:, :, None].expand(-1, -1, hist.shape[2])), word[:, :, None]], 2)
            if alpha is not None:
                par = beam[:, :, None, None]  # [n, K, 1, 1] parent beams
                ahist = torch.cat([ahist.gather(1, par.expand(-1, -1, *ahist.shape[2:])),
                                   alpha.gather(1, par[..., 0].expand(-1, -1, alpha.shape[-1]))[:, :, None]], 2)
            rows = (torch.arange(n, device=dev)[:, None] * K + beam).view(-1)  # [n*K] parent rows
            state = reorder_state(state, rows)
            prev = word.reshape(-1)
            # images with K finished hypotheses, or no live one, are done
            n_fin = torch.tensor([len(finished[i]) for i in active], device=dev)
            alive = torch.isfinite(scores).any(1)
            going = (n_fin < K) & alive
            if t == max_len - 1:
                going[:] = False
            if not bool(going.all()):
                for r in (~going).nonzero().flatten().tolist():
                    i = active[r]
                    if len(finished[i]) < K:  # out of steps: the live hypotheses count as they are
                        for k in range(K):
                            if torch.isfinite(scores[r, k]):
                                lp, toks = float(scores[r, k]), hist[r, k].tolist()
                                att = ahist[r, k].cpu() if ahist is not None else None
                                finished[i].append((_final_score(lp, len(toks), norm), toks, lp, att))
                keep_rows = going.nonzero().flatten()
                if keep_rows.numel() == 0:
                    break
                active = [active[r] for r in keep_rows.tolist()]
                scores, hist = scores[keep_rows], hist[keep_rows]
                if ahist is not None:
                    ahist = ahist[keep_rows]
                flat = (keep_rows[:, None] * K + torch.arange(K, device=dev)).view(-1)
                state, prev = reorder_state(state, flat), prev[flat]
        return [_best(f, K, attention) for f in finished]


def _best(finished: list[tuple], k: int, attention: bool = False) -> list[Hypothesis]:
    """(score, tokens, logprob, alphas) -> the best k (tokens, logprob[, alphas])."""
    ranked = sorted(finished, key=lambda x: -x[0])  # stable: earlier-finished first among equal scores
    return [(f[1], f[2], f[3]) if attention else (f[1], f[2]) for f in ranked[:k]]


def beam_search_single(model: CaptionModel, feat, beam_size: int = GenConfig.beam, max_len: int = GenConfig.max_len,
                       length_norm: float | bool = GenConfig.length_norm, min_len: int = GenConfig.min_len,
                       mask=None, attention: bool = False) -> list[Hypothesis]:
    """One image, one hypothesis at a time, in plain Python: the reference that `beam_search` must match.

    feat float [Din] (or [1, Din]; a region set [N, D] or [1, N, D] with mask [N]) -> up to `beam_size`
    (tokens, logprob[, alphas]), best first.
    """
    K, norm = int(beam_size), _alpha(length_norm)
    _check(K, max_len)
    with _eval_mode(model):
        feat, mask = _prepare(model, feat, mask)
        assert feat.shape[0] == 1, "beam_search_single decodes one image"
        live = [([], 0.0, _init(model, feat, mask), [])]  # (tokens, logprob, state, [alpha [N] per word])
        finished = []  # (score, tokens, logprob, alphas)
        for t in range(max_len):
            cands = []
            for toks, lp, st, atts in live:
                prev = toks[-1] if toks else START_ID
                logp, new_st = _step(model, torch.tensor([prev], device=feat.device), st, t, min_len)
                a = atts + [_alphas(new_st, True)[0].cpu()] if attention else atts
                for w, l in enumerate(logp[0].tolist()):
                    if l != float("-inf"):
                        cands.append((lp + l, toks + [w], new_st, a))
            cands.sort(key=lambda c: -c[0])
            live = []
            for r, (lp, toks, st, a) in enumerate(cands):
                if toks[-1] == END_ID:
                    if r < K:
                        finished.append((_final_score(lp, len(toks), norm), toks[:-1], lp, _stack(a, attention)))
                elif len(live) < K:
                    live.append((toks, lp, st, a))
            if len(finished) >= K or not live:
                break
        else:
            for toks, lp, _, a in live:
                finished.append((_final_score(lp, len(toks), norm), toks, lp, _stack(a, attention)))
        return _best(finished, K, attention)


def _stack(alphas: list[torch.Tensor], attention: bool) -> torch.Tensor | None:
    return torch.stack(alphas) if attention else None


def decode(model: CaptionModel, feats, method: str = "beam", beam_size: int = GenConfig.beam,
           max_len: int = GenConfig.max_len, length_norm: float | bool = GenConfig.length_norm,
           min_len: int = GenConfig.min_len, mask=None, attention: bool = False, **sample_kw) -> list[Hypothesis]:
    """The best caption of every image by `method` ("greedy" | "sample" | "beam"): B (tokens, logprob), with
    the attention weights as a third element when `attention` (module doc)."""
    if method == "greedy" or (method == "beam" and beam_size == 1):
        return greedy(model, feats, max_len, min_len, mask, attention)
    if method == "sample":
        return sample(model, feats, max_len, min_len=min_len, mask=mask, attention=attention, **sample_kw)
    if method == "beam":
        return [h[0] for h in beam_search(model, feats, beam_size, max_len, length_norm, min_len, mask, attention)]
    raise ValueError(f"unknown decoding method {method!r}")
