"""Decoding a `CaptionModel`: greedy (argmax), sampling, and beam search, all batched over images.

Every decoder takes feats float [B, Din] and returns, per image, ``(tokens, logprob)`` pairs: `tokens` a list of
word ids without START and END, `logprob` the model's summed log-probability of those tokens *and* of END when
the caption ended (float, natural log). PAD and START are never generated, nor END before `min_len` words
(default 1: no empty caption). Decoding runs at most `max_len` steps (END counts as one); a caption still open
after `max_len` steps is returned as it is (cut, no END). Defaults come from `GenConfig`.

Beam search, as defined by `beam_search_single` (the obvious one-image version) and reproduced by the batched
`beam_search`: keep up to K live hypotheses. At every step each live hypothesis is extended by every word; the
candidates are ranked by their summed log-probability. Candidates ending in END that rank among the first K
are finished; the best K candidates that do not end in END become the new live hypotheses. An image is done
when it has K finished hypotheses (or after `max_len` steps, when its live hypotheses are added as they are).
The finished hypotheses are returned best first by ``logprob / length ** length_norm`` (length = tokens + END;
``length_norm = 0`` ranks by the raw sum). With K = 1 this is exactly greedy decoding.

Dimension glossary: B images, K beam size, V vocabulary, Din model input size, n images still being decoded.
"""
from __future__ import annotations

import contextlib

import torch
from dvsa.data.text import END_ID, PAD_ID, START_ID
from dvsa.generate.model import CaptionModel, GenConfig, reorder_state

Hypothesis = tuple[list[int], float]


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


def _prepare(model: CaptionModel, feats) -> torch.Tensor:
    p = next(model.parameters())
    feats = torch.as_tensor(feats).to(device=p.device, dtype=p.dtype)
    if feats.dim() == 1:
        feats = feats[None]
    return feats


def _step(model: CaptionModel, prev: torch.Tensor, state: dict, t: int, min_len: int) -> tuple[torch.Tensor, dict]:
    """model.step at step t (0-based), with PAD and START (never a valid next word), and END before `min_len`
    words, given log-probability -inf."""
    logp, state = model.step(prev, state)
    logp[:, PAD_ID] = float("-inf")
    logp[:, START_ID] = float("-inf")
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


def greedy(model: CaptionModel, feats, max_len: int = GenConfig.max_len, min_len: int = GenConfig.min_len
           ) -> list[Hypothesis]:
    """Argmax decoding. feats float [B, Din] -> B (tokens, logprob)."""
    _check(1, max_len)
    return _sample_loop(model, feats, max_len, min_len, pick=lambda logp: logp.argmax(-1))


def sample(model: CaptionModel, feats, max_len: int = GenConfig.max_len, temperature: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None, min_len: int = GenConfig.min_len) -> list[Hypothesis]:
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

    return _sample_loop(model, feats, max_len, min_len, pick)


def _sample_loop(model, feats, max_len, min_len, pick):
    with _eval_mode(model):
        feats = _prepare(model, feats)
        B = feats.shape[0]
        state = model.init_state(feats)
        prev = torch.full((B,), START_ID, dtype=torch.long, device=feats.device)
        done = torch.zeros(B, dtype=torch.bool, device=feats.device)
        total = torch.zeros(B, dtype=torch.float64, device=feats.device)
        words = []
        for t in range(max_len):
            logp, state = _step(model, prev, state, t, min_len)  # [B, V]
            w = pick(logp)  # [B]
            total += torch.where(done, 0.0, logp.gather(1, w[:, None]).squeeze(1).double())
            words.append(torch.where(done, END_ID, w))
            done = done | (w == END_ID)
            prev = w
            if bool(done.all()):
                break
        seqs = torch.stack(words, 1).tolist() if words else [[] for _ in range(B)]
        out = []
        for seq, lp in zip(seqs, total.tolist()):
            toks = seq[: seq.index(END_ID)] if END_ID in seq else seq
            out.append((toks, lp))
        return out


def beam_search(model: CaptionModel, feats, beam_size: int = GenConfig.beam, max_len: int = GenConfig.max_len,
                length_norm: float | bool = GenConfig.length_norm, min_len: int = GenConfig.min_len
                ) -> list[list[Hypothesis]]:
    """Batched beam search. feats float [B, Din] -> per image up to `beam_size` (tokens, logprob), best first.

    All live beams of all images still being decoded go through one `model.step` call per word; images that
    are done leave the batch.
    """
    K, alpha = int(beam_size), _alpha(length_norm)
    _check(K, max_len)
    with _eval_mode(model):
        feats = _prepare(model, feats)
        B, dev = feats.shape[0], feats.device
        finished: list[list[tuple[float, list[int], float]]] = [[] for _ in range(B)]  # (score, tokens, logprob)
        active = list(range(B))  # original index of each row group still decoding
        state = reorder_state(model.init_state(feats), torch.arange(B, device=dev).repeat_interleave(K))  # n*K rows
        scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=dev)  # [n, K]
        scores[:, 0] = 0.0  # one live hypothesis (the empty one) per image at the start
        hist = torch.zeros(B, K, 0, dtype=torch.long, device=dev)  # [n, K, t] words so far
        prev = torch.full((B * K,), START_ID, dtype=torch.long, device=dev)
        for t in range(max_len):
            n = len(active)
            logp, state = _step(model, prev, state, t, min_len)  # [n*K, V]
            V = logp.shape[-1]
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
                    finished[active[r]].append((_final_score(lp, len(toks) + 1, alpha), toks, lp))
            scores, beam, word = new_scores[:, :K], new_beam[:, :K], new_word[:, :K]
            hist = torch.cat([hist.gather(1, beam[:, :, None].expand(-1, -1, hist.shape[2])), word[:, :, None]], 2)
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
                                finished[i].append((_final_score(lp, len(toks), alpha), toks, lp))
                keep_rows = going.nonzero().flatten()
                if keep_rows.numel() == 0:
                    break
                active = [active[r] for r in keep_rows.tolist()]
                scores, hist = scores[keep_rows], hist[keep_rows]
                flat = (keep_rows[:, None] * K + torch.arange(K, device=dev)).view(-1)
                state, prev = reorder_state(state, flat), prev[flat]
        return [_best(f, K) for f in finished]


def _best(finished: list[tuple[float, list[int], float]], k: int) -> list[Hypothesis]:
    ranked = sorted(finished, key=lambda x: -x[0])  # stable: earlier-finished first among equal scores
    return [(toks, lp) for _, toks, lp in ranked[:k]]


def beam_search_single(model: CaptionModel, feat, beam_size: int = GenConfig.beam, max_len: int = GenConfig.max_len,
                       length_norm: float | bool = GenConfig.length_norm, min_len: int = GenConfig.min_len
                       ) -> list[Hypothesis]:
    """One image, one hypothesis at a time, in plain Python: the reference that `beam_search` must match.

    feat float [Din] (or [1, Din]) -> up to `beam_size` (tokens, logprob), best first.
    """
    K, alpha = int(beam_size), _alpha(length_norm)
    _check(K, max_len)
    with _eval_mode(model):
        feat = _prepare(model, feat)
        assert feat.shape[0] == 1, "beam_search_single decodes one image"
        live = [([], 0.0, model.init_state(feat))]  # (tokens, logprob, state)
        finished = []  # (score, tokens, logprob)
        for t in range(max_len):
            cands = []
            for toks, lp, st in live:
                prev = toks[-1] if toks else START_ID
                logp, new_st = _step(model, torch.tensor([prev], device=feat.device), st, t, min_len)
                for w, l in enumerate(logp[0].tolist()):
                    if l != float("-inf"):
                        cands.append((lp + l, toks + [w], new_st))
            cands.sort(key=lambda c: -c[0])
            live = []
            for r, (lp, toks, st) in enumerate(cands):
                if toks[-1] == END_ID:
                    if r < K:
                        finished.append((_final_score(lp, len(toks), alpha), toks[:-1], lp))
                elif len(live) < K:
                    live.append((toks, lp, st))
            if len(finished) >= K or not live:
                break
        else:
            for toks, lp, _ in live:
                finished.append((_final_score(lp, len(toks), alpha), toks, lp))
        return _best(finished, K)


def decode(model: CaptionModel, feats, method: str = "beam", beam_size: int = GenConfig.beam,
           max_len: int = GenConfig.max_len, length_norm: float | bool = GenConfig.length_norm,
           min_len: int = GenConfig.min_len, **sample_kw) -> list[Hypothesis]:
    """The best caption of every image by `method` ("greedy" | "sample" | "beam"): B (tokens, logprob)."""
    if method == "greedy" or (method == "beam" and beam_size == 1):
        return greedy(model, feats, max_len, min_len)
    if method == "sample":
        return sample(model, feats, max_len, min_len=min_len, **sample_kw)
    if method == "beam":
        return [h[0] for h in beam_search(model, feats, beam_size, max_len, length_norm, min_len)]
    raise ValueError(f"unknown decoding method {method!r}")
