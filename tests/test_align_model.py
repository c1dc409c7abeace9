"""Alignment model, scores and loss against slow twins on random inputs."""
import pytest
import torch
from align_fakes import one_thread  # noqa: F401 (autouse fixture)
from dvsa.align.loss import max_margin_loss, max_margin_loss_slow
from dvsa.align.model import AlignConfig, AlignmentModel, reverse_padded
from dvsa.align.scores import image_sentence_scores, image_sentence_scores_slow


def tiny_cfg(**kw):
    base = dict(embed_dim=12, hidden_dim=8, word_dim=6, dropout=0.0)
    base.update(kw)
    return AlignConfig(**base)


def random_sentences(g, n, t, vocab=20):
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    tokens = torch.randint(4, vocab, (n, t), generator=g)
    tokens[torch.arange(t)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths


def test_reverse_padded_is_its_own_inverse_and_keeps_padding():
    x = torch.arange(12.0).view(3, 4)
    lengths = torch.tensor([4, 2, 1])
    r = reverse_padded(x, lengths)
    assert r.tolist() == [[3, 2, 1, 0], [5, 4, 6, 7], [8, 9, 10, 11]]
    assert torch.equal(reverse_padded(r, lengths), x)


def brnn_slow(model, tokens, length):
    """One sentence, no padding, eqs. 2-6 word by word."""
    relu = torch.relu
    x = [model.words.weight[int(w)] for w in tokens[:length]]
    e = [relu(model.word_in(xi)) for xi in x]
    hf, h = [], torch.zeros(model.cfg.hidden_dim)
    for et in e:
        h = relu(et + model.fwd(h))
        hf.append(h)
    hb, h = [None] * length, torch.zeros(model.cfg.hidden_dim)
    for t in reversed(range(length)):
        h = relu(e[t] + model.bwd(h))
        hb[t] = h
    return torch.stack([relu(model.word_out(hf[t] + hb[t])) for t in range(length)])


def test_embed_words_matches_word_by_word_twin_with_padding():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = AlignmentModel(tiny_cfg(), vocab_size=20, feat_dim=5).eval()
    tokens, lengths = random_sentences(g, 7, 9)
    lengths[0] = 9  # one full-length sentence
    s = model.embed_words(tokens, lengths)
    assert s.shape == (7, 9, 12)
    for i in range(7):
        n = int(lengths[i])
        torch.testing.assert_close(s[i, :n], brnn_slow(model, tokens[i], n), atol=1e-5, rtol=1e-5)
        assert torch.all(s[i, n:] == 0)
    # Extra padding must not change anything.
    s2 = model.embed_words(torch.cat([tokens, torch.zeros(7, 3, dtype=torch.long)], 1), lengths)
    torch.testing.assert_close(s2[:, :9], s)


def test_pretrained_word_vectors_fixed_or_trained():
    vec = torch.randn(20, 6)
    fixed = AlignmentModel(tiny_cfg(), 20, 5, word_vectors=vec)
    assert not fixed.words.weight.requires_grad
    assert torch.equal(fixed.words.weight[1:], vec[1:]) and torch.all(fixed.words.weight[0] == 0)
    assert AlignmentModel(tiny_cfg(train_words="yes"), 20, 5, word_vectors=vec).words.weight.requires_grad
    assert AlignmentModel(tiny_cfg(), 20, 5).words.weight.requires_grad  # random init: trained
    with pytest.raises(ValueError):
        AlignmentModel(tiny_cfg(), 20, 5, word_vectors=torch.randn(19, 6))


def test_every_parameter_gets_a_gradient():
    g = torch.Generator().manual_seed(1)
    model = AlignmentModel(tiny_cfg(dropout=0.3), 20, 5)
    tokens, lengths = random_sentences(g, 4, 6)
    v, s = model(torch.randn(4, 3, 5), tokens, lengths)
    sc = image_sentence_scores(v, torch.ones(4, 3, dtype=torch.bool), s, tokens > 0)
    max_margin_loss(sc).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def random_embeddings(g, b, r, n, t, h=7):
    v = torch.randn(b, r, h, generator=g)
    rmask = torch.rand(b, r, generator=g) < 0.7
    rmask[:, 0] = True
    s = torch.randn(n, t, h, generator=g)
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    if n:
        lengths[0] = t
    wmask = torch.arange(t)[None, :] < lengths[:, None]
    return v, rmask, s, wmask


@pytest.mark.parametrize("kind", ["max", "defrag"])
@pytest.mark.parametrize("chunk", [1, 50, 1 << 20])
@pytest.mark.parametrize("norm", ["none", "words"])
def test_scores_match_slow_twin(kind, chunk, norm):
    g = torch.Generator().manual_seed(2)
    v, rmask, s, wmask = random_embeddings(g, 6, 4, 9, 5)
    fast = image_sentence_scores(v, rmask, s, wmask, kind=kind, chunk=chunk, norm=norm)
    slow = image_sentence_scores_slow(v, rmask, s, wmask, kind=kind, norm=norm)
    assert fast.shape == (6, 9)
    torch.testing.assert_close(fast.double(), slow, atol=1e-4, rtol=1e-4)


def test_scores_edge_cases_and_errors():
    g = torch.Generator().manual_seed(3)
    v, rmask, s, wmask = random_embeddings(g, 3, 2, 0, 4)
    assert image_sentence_scores(v, rmask, s, wmask).shape == (3, 0)
    v, rmask, s, wmask = random_embeddings(g, 3, 2, 4, 4)
    rmask[1] = False
    with pytest.raises(ValueError, match="real region"):
        image_sentence_scores(v, rmask, s, wmask)
    with pytest.raises(ValueError, match="kind"):
        image_sentence_scores(v, rmask | True, s, wmask, kind="mean")


def test_word_region_scores_masks():
    g = torch.Generator().manual_seed(4)
    model = AlignmentModel(tiny_cfg(), 20, 5).eval()
    tokens, lengths = random_sentences(g, 3, 6)
    lengths[0] = 6
    lengths[1] = 2
    tokens[1, 2:] = 0
    feats = torch.randn(3, 4, 5)
    rmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = model.word_region_scores(feats, rmask, tokens, lengths)
    assert out.shape == (3, 6, 4)
    with torch.no_grad():
        v, s = model.embed_regions(feats), model.embed_words(tokens, lengths)
    for b in range(3):
        for t in range(6):
            for i in range(4):
                want = 0.0 if t >= lengths[b] else (float("-inf") if not rmask[b, i] else float(v[b, i] @ s[b, t]))
                assert out[b, t, i].item() == pytest.approx(want, abs=1e-5)
    # Eq. 8 for the aligned pair equals the sum over words of the per-word best region.
    wmask = torch.arange(6)[None, :] < lengths[:, None]
    full = image_sentence_scores(v, rmask, s, wmask)
    per_pair = out.amax(2).masked_fill(~wmask, 0).sum(1)
    torch.testing.assert_close(per_pair, full.diagonal())


@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_matches_slow_twin(hardest, reduction):
    g = torch.Generator().manual_seed(5)
    for b in (1, 2, 7):
        scores = torch.randn(b, b, generator=g) * 2
        same = torch.zeros(b, b, dtype=torch.bool)
        if b > 2:
            same[0, 1] = same[1, 0] = True  # two sentences of one image
        for sm in (None, same):
            fast = max_margin_loss(scores, margin=1.0, hardest=hardest, same=sm, reduction=reduction)
            slow = max_margin_loss_slow(scores, 1.0, hardest, sm, reduction)
            assert fast.item() == pytest.approx(slow, abs=1e-5)


def test_loss_is_zero_when_true_pairs_win_by_the_margin_and_columns_count():
    scores = torch.full((3, 3), -5.0)
    scores.fill_diagonal_(0.0)
    assert max_margin_loss(scores).item() == 0
    scores[2, 0] = 0.5  # image 2 beats image 0 on sentence 0: a column violation, 1.5; and a row violation of image 2
    assert max_margin_loss(scores, reduction="sum").item() == pytest.approx(1.5 + 1.5)


@pytest.mark.parametrize("kind", ["max", "defrag"])
def test_score_gradients_match_a_plain_masked_version(kind):
    g = torch.Generator().manual_seed(6)
    v, rmask, s, wmask = random_embeddings(g, 5, 4, 6, 5)
    v1, s1 = v.clone().requires_grad_(), s.clone().requires_grad_()
    v2, s2 = v.clone().requires_grad_(), s.clone().requires_grad_()
    w = torch.randn(5, 6, generator=g)
    (image_sentence_scores(v1, rmask, s1, wmask, kind=kind, chunk=30) * w).sum().backward()
    dots = torch.einsum("brh,sth->bsrt", v2, s2)  # [B, S, R, T]
    if kind == "max":
        per_word = dots.masked_fill(~rmask[:, None, :, None], float("-inf")).amax(2)
    else:
        per_word = (dots.clamp_min(0) * rmask[:, None, :, None]).sum(2)
    ref = (per_word * wmask[None]).sum(-1)  # [B, S]
    (ref * w).sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(s1.grad, s2.grad)


def test_box_geometry_and_the_geometry_input():
    from dvsa.align.model import GEOMETRY_DIM, box_geometry

    boxes = torch.tensor([[[0, 0, 200, 100], [50, 25, 150, 75], [0, 0, 0, 0]]], dtype=torch.float32)  # row 2: padding
    g = box_geometry(boxes)
    torch.testing.assert_close(g[0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(g[0, 1], torch.tensor([0.25, 0.25, 0.75, 0.75, 0.25]))
    torch.testing.assert_close(g[0, 2], torch.zeros(GEOMETRY_DIM))
    model = AlignmentModel(tiny_cfg(geometry=True), 20, 5).eval()
    assert model.region_proj.in_features == 5 + GEOMETRY_DIM
    feats = torch.randn(1, 3, 5)
    with torch.no_grad():
        v = model.embed_regions(feats, boxes)
        want = torch.cat([feats, g], -1) @ model.region_proj.weight.T + model.region_proj.bias
    torch.testing.assert_close(v, want)
    with pytest.raises(ValueError, match="geometry"):
        model.embed_regions(feats)
    with pytest.raises(ValueError, match="boxes must be"):
        model.embed_regions(feats, boxes[:, :2])
    plain = AlignmentModel(tiny_cfg(), 20, 5)
    assert plain.region_proj.in_features == 5
    torch.testing.assert_close(plain.region_inputs(feats, boxes), feats)  # the paper's input ignores boxes


def test_box_geometry_bins_against_a_per_box_twin():
    """bins > 0: the 5 numbers of bins = 0, then centre x, centre y, width, height (fractions of the image),
    each as `bins` Gaussian bumps at linspace(0, 1, bins) of width 1 / (bins - 1); padded rows stay zero."""
    import math

    from dvsa.align.model import box_geometry, geometry_dim

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 6, 2, generator=g) * 100
    wh = torch.rand(2, 6, 2, generator=g) * 90 + 5
    boxes = torch.cat([xy, xy + wh], -1)
    boxes[:, 0] = torch.tensor([0.0, 0.0, 200.0, 150.0])  # row 0: the whole image
    boxes[1, 5] = 0  # padding
    bins = 7
    got = box_geometry(boxes, bins)
    assert got.shape == (2, 6, geometry_dim(bins)) == (2, 6, 5 + 4 * bins)
    torch.testing.assert_close(got[..., :5], box_geometry(boxes))
    for b in range(2):
        for r in range(6):
            x1, y1, x2, y2 = (float(v) for v in boxes[b, r])
            if (b, r) == (1, 5):
                assert not got[b, r].any()
                continue
            place = [(x1 + x2) / 400, (y1 + y2) / 300, (x2 - x1) / 200, (y2 - y1) / 150]
            want = [math.exp(-0.5 * ((p - c / (bins - 1)) * (bins - 1)) ** 2) for p in place for c in range(bins)]
            torch.testing.assert_close(got[b, r, 5:], torch.tensor(want), atol=1e-5, rtol=1e-5)
    model = AlignmentModel(tiny_cfg(geometry=True, geometry_bins=bins), 20, 5)
    assert model.region_proj.in_features == 5 + geometry_dim(bins)
    assert model.region_inputs(torch.randn(2, 6, 5), boxes).shape == (2, 6, 5 + geometry_dim(bins))
    with pytest.raises(ValueError, match="geometry_bins"):
        AlignConfig(geometry_bins=8)  # needs geometry=True
    with pytest.raises(ValueError, match="geometry_bins"):
        AlignConfig(geometry=True, geometry_bins=-1)


def test_geometry_bins_let_a_linear_score_prefer_a_middle_size():
    """What the bumps are for: a linear score of the 5 numbers (corners and area) cannot rank the boxes whose
    width and height are both in one range (an object's size) above the smaller and larger ones; of the bumps it
    can (least squares fit, ranking measured as the AUC)."""
    from dvsa.align.model import box_geometry

    g = torch.Generator().manual_seed(0)
    n = 600
    wh = torch.rand(n, 2, generator=g) * 0.9 + 0.05  # box width and height, fractions of a 100 px image
    xy = torch.rand(n, 2, generator=g) * (1 - wh)
    boxes = torch.cat([xy, xy + wh], -1) * 100
    boxes = torch.cat([torch.tensor([[0.0, 0.0, 100.0, 100.0]]), boxes])[None]  # [1, n + 1, 4], row 0 the image
    target = ((wh > 0.3) & (wh < 0.45)).all(1).float()  # neither parts of the object nor boxes around more
    assert 10 <= int(target.sum()) <= 40
    fit = {}
    for bins in (0, 16):
        geo = box_geometry(boxes, bins)[0, 1:]
        a = torch.cat([geo, torch.ones(n, 1)], 1).double()
        w = torch.linalg.lstsq(a, target.double()[:, None]).solution
        score = (a @ w)[:, 0]
        inside, outside = score[target > 0], score[target == 0]
        fit[bins] = float((inside[:, None] > outside[None, :]).double().mean())
    assert fit[16] > 0.97 and fit[0] < 0.85, fit

