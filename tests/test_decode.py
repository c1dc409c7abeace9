import pytest
import torch
import torch.nn.functional as F
from dvsa.data.text import END_ID, START_ID, UNK_ID
import dvsa.generate.decode as decode_module
from dvsa.generate.decode import beam_search, beam_search_single, decode, greedy, sample
from dvsa.generate.model import CaptionModel, GenConfig

torch.set_num_threads(1)
V, D = 13, 6


def _random_model(seed, cell="rnn", image_at="bias"):
    """An untrained model whose captions end at varied lengths (END's bias drawn per seed)."""
    torch.manual_seed(seed)
    m = CaptionModel(GenConfig(cell=cell, image_at=image_at, hidden=16, embed=8, dropout=0.0, prior_weight=0.0), V, D)
    with torch.no_grad():
        m.out.weight.mul_(3.0)
        m.out.bias[END_ID] = float(torch.empty(()).uniform_(-2.0, 2.5))
    return m


def _sequence_logprob(m, feat, toks, ended):
    """Teacher-forced log-probability of a caption (and of END when it ended)."""
    inp = torch.tensor([[START_ID] + toks])
    tgt = toks + [END_ID]
    with torch.no_grad():
        logp = F.log_softmax(m.eval()(feat[None], inp)[0], -1)
    n = len(tgt) if ended else len(toks)
    return sum(logp[t, tgt[t]].item() for t in range(n))


CASES = [(seed, cell) for seed in range(8) for cell in ("rnn", "lstm")] + [(100, "lstm-input")]


@pytest.mark.parametrize("seed,cell", CASES)
def test_batched_beam_equals_one_image_beam(seed, cell):
    m = _random_model(seed, *(("lstm", "input") if cell == "lstm-input" else (cell, "bias")))
    feats = torch.randn(5, D) * 2
    for K in (1, 3, 7):
        for ln in (0.0, 1.0):
            min_len = (K + int(ln)) % 3  # 0, 1 and 2 words before END is allowed
            batched = beam_search(m, feats, K, 9, ln, min_len)
            for i in range(len(feats)):
                one = beam_search_single(m, feats[i], K, 9, ln, min_len)
                assert [h[0] for h in one] == [h[0] for h in batched[i]], (K, ln, i)
                for (_, a), (_, b) in zip(one, batched[i]):
                    assert abs(a - b) < 1e-5


def test_beam_results_are_consistent_with_the_model():
    m = _random_model(3)
    feats = torch.randn(6, D)
    lengths = set()
    for ln in (0.0, 1.0):
        res = beam_search(m, feats, 4, 7, ln)
        for i, hyps in enumerate(res):
            assert 1 <= len(hyps) <= 4
            keys = []
            for toks, lp in hyps:
                ended = len(toks) < 7
                assert lp == pytest.approx(_sequence_logprob(m, feats[i], toks, ended), abs=1e-4)
                assert START_ID not in toks and END_ID not in toks and 0 not in toks
                keys.append(lp / (len(toks) + ended) ** ln)
                lengths.add(len(toks))
            assert keys == sorted(keys, reverse=True)  # best first
    assert len(lengths) > 1


def test_unknown_word_is_never_generated():
    """A model that puts most of its mass on <unk> still says real words: greedy, sampling and beam."""
    m = _random_model(5, "lstm")
    with torch.no_grad():
        m.out.bias[UNK_ID] = 50.0
    feats = torch.randn(4, D)
    gen = torch.Generator().manual_seed(0)
    for hyps in (greedy(m, feats, 8), sample(m, feats, 8, generator=gen),
                 [h for per in beam_search(m, feats, 3, 8) for h in per]):
        for toks, lp in hyps:
            assert toks and UNK_ID not in toks
            assert lp < 0


@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_beam_one(seed):
    m = _random_model(seed, "lstm" if seed % 2 else "rnn")
    feats = torch.randn(7, D) * 2
    g = greedy(m, feats, 10)
    b = beam_search(m, feats, 1, 10)
    for (gt, glp), hyps in zip(g, b):
        assert hyps[0][0] == gt
        assert hyps[0][1] == pytest.approx(glp, abs=1e-5)
    assert decode(m, feats, "beam", beam_size=1, max_len=10) == g


def test_greedy_logprob_and_cut_at_max_len():
    m = _random_model(1)
    with torch.no_grad():
        m.out.bias[END_ID] = -50.0  # never ends: every caption is cut at max_len
    feats = torch.randn(3, D)
    for toks, lp in greedy(m, feats, 5):
        assert len(toks) == 5
    m = _random_model(2)
    feats = torch.randn(4, D)
    for i, (toks, lp) in enumerate(greedy(m, feats, 8)):
        assert lp == pytest.approx(_sequence_logprob(m, feats[i], toks, len(toks) < 8), abs=1e-4)


def test_sampling():
    m = _random_model(4)
    feats = torch.randn(5, D)
    a = sample(m, feats, 8, temperature=0.7, generator=torch.Generator().manual_seed(1))
    b = sample(m, feats, 8, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert a == b
    assert sample(m, feats, 8, top_k=1) == greedy(m, feats, 8)  # top-1 sampling is argmax
    many = {tuple(t) for t, _ in sample(m, feats[:1].repeat(40, 1), 8, temperature=2.0)}
    assert len(many) > 1
    for i, (toks, lp) in enumerate(a):
        assert lp == pytest.approx(_sequence_logprob(m, feats[i], toks, len(toks) < 8), abs=1e-4)
    with pytest.raises(ValueError):
        sample(m, feats, 8, temperature=0.0)


def test_decoding_restores_training_mode_and_needs_no_grad():
    m = _random_model(5).train()
    feats = torch.randn(2, D, requires_grad=True)
    beam_search(m, feats, 3, 5)
    greedy(m, feats, 5)
    assert m.training


def test_bench_decode_prints_a_table(capsys):
    from dvsa.scripts.bench_decode import main

    assert main(["--n-images", "3", "--vocab", "20", "--feat-dim", "8", "--hidden", "16", "--embed", "8",
                 "--max-len", "5", "--beams", "1", "3", "--repeat", "1", "--single-images", "1"]) == 0
    out = capsys.readouterr().out
    assert "batched img/s" in out and len([ln for ln in out.splitlines() if ln.strip().startswith(("1 |", "3 |"))]) == 2


def test_min_len_forbids_early_end():
    m = _random_model(0)
    with torch.no_grad():
        m.out.bias[END_ID] = 8.0  # END is by far the likeliest word at every step
    feats = torch.randn(4, D)
    assert all(t == [] for t, _ in greedy(m, feats, 6, min_len=0))
    assert all(len(t) == 3 for t, _ in greedy(m, feats, 6, min_len=3))
    for hyps in beam_search(m, feats, 3, 6, min_len=2):
        assert all(len(t) >= 2 for t, _ in hyps)


def test_bad_decoding_arguments():
    m = _random_model(0)
    for fn in (lambda: beam_search(m, torch.randn(2, D), 0, 5), lambda: beam_search(m, torch.randn(2, D), 3, 0),
               lambda: beam_search_single(m, torch.randn(D), 3, 0), lambda: greedy(m, torch.randn(2, D), 0)):
        with pytest.raises(ValueError, match="must be >= 1"):
            fn()


def _with_prior(m, w, mean_seed=3):
    """`m` decoding with prior_weight w, its training-input mean set to something other than 0."""
    m.cfg.prior_weight = w
    g = torch.Generator().manual_seed(mean_seed)
    m.set_feature_norm(torch.randn(50, D, generator=g) * 2 + 1)
    return m


@pytest.mark.parametrize("seed,cell", [(0, "rnn"), (1, "lstm"), (2, "rnn"), (3, "lstm")])
def test_specific_decoding_steps_are_the_formula_and_batched_beam_matches_one_image(seed, cell):
    """prior_weight w: each step's distribution is log_softmax(log p(. | image) - w log p(. | mean input)),
    written out here from two plain runs of the model; the batched beam still equals the one-image beam."""
    m = _with_prior(_random_model(seed, cell), 0.4).eval()
    feats = torch.randn(3, D) * 2
    toks = [5, 7, 4]
    img, blank = m.init_state(feats), m.init_state(m.feat_mean.expand_as(feats))
    state = decode_module._init(m, feats, None)
    prev = torch.full((3,), START_ID)
    for t, w in enumerate(toks):
        with torch.no_grad():
            li, img = m.step(prev, img)
            lb, blank = m.step(prev, blank)
            got, state = decode_module._step(m, prev, state, t, 0)
        want = F.log_softmax(li - 0.4 * lb, -1)
        want[:, [0, START_ID, UNK_ID]] = float("-inf")
        assert torch.allclose(got, want, atol=1e-6)
        prev = torch.full((3,), w)
    for K in (1, 3):
        batched = beam_search(m, feats, K, 8, 1.0)
        for b in range(3):
            single = beam_search_single(m, feats[b], K, 8, 1.0)
            assert [h[0] for h in batched[b]] == [h[0] for h in single]
            assert [h[1] for h in batched[b]] == pytest.approx([h[1] for h in single], abs=1e-5)


def test_specific_decoding_changes_captions_and_weight_0_is_the_plain_model():
    m = _with_prior(_random_model(5), 0.0)
    feats = torch.randn(8, D) * 2
    plain = greedy(m, feats, 8)
    assert not any(k.startswith(decode_module.PRIOR) for k in decode_module._init(m, feats, None))  # no 2nd run
    assert [h[0] for h in greedy(_with_prior(m, 0.9), feats, 8)] != [h[0] for h in plain]
    with pytest.raises(ValueError, match="prior_weight"):
        GenConfig(prior_weight=1.0).validate()
