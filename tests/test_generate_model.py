import itertools

import pytest
import torch
import torch.nn.functional as F
from dvsa.data.text import END_ID, START_ID, Vocabulary
from dvsa.generate.model import (
    CaptionModel,
    GenConfig,
    caption_loss,
    frequency_bias,
    input_dim,
)

torch.set_num_threads(1)


def _model(cell="rnn", image_at="bias", mode="image", V=11, D=6, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    cfg = GenConfig(cell=cell, image_at=image_at, input=mode, hidden=16, embed=8, dropout=dropout)
    return CaptionModel(cfg, V, D)


def _tokens(B=4, T=6, V=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(4, V, (B, T), generator=g)
    tok[:, 0] = START_ID
    tok[1, 4:] = 0  # a shorter, padded sentence
    return tok


@pytest.mark.parametrize("cell,image_at,mode", list(itertools.product(["rnn", "lstm"], ["bias", "input"],
                                                                      ["image", "region+image"])))
def test_forward_matches_step_by_step(cell, image_at, mode):
    m = _model(cell, image_at, mode).eval()
    din = input_dim(6, mode)
    assert m.input_dim == din
    feats = torch.randn(4, din)
    tok = _tokens()
    logits = m(feats, tok)
    assert logits.shape == (4, 6, 11)
    state = m.init_state(feats)
    for t in range(tok.shape[1]):
        logp, state = m.step(tok[:, t], state)
        assert torch.allclose(logp, F.log_softmax(logits[:, t], -1), atol=1e-5)


def test_rnn_is_equation_14():
    """The plain RNN written out from the paper, weight by weight."""
    m = _model("rnn").eval()
    feats, tok = torch.randn(4, 6), _tokens()
    W_hx, b_h, W_hh, W_hi = m.w_x.weight, m.w_x.bias, m.w_h.weight, m.w_img.weight
    b_v = feats @ W_hi.T  # eq. 13
    h = torch.zeros(4, 16)
    for t in range(tok.shape[1]):
        x = m.embed.weight[tok[:, t]]
        h = torch.relu(x @ W_hx.T + h @ W_hh.T + b_h + (b_v if t == 0 else 0))  # eq. 14
        y = h @ m.out.weight.T + m.out.bias  # eq. 15 (before the softmax)
        assert torch.allclose(m(feats, tok)[:, t], y, atol=1e-5)


def test_image_changes_only_through_first_step():
    m = _model("rnn").eval()
    tok = _tokens()
    a, b = m(torch.randn(4, 6), tok), m(torch.randn(4, 6), tok)
    assert not torch.allclose(a[:, 0], b[:, 0])


@pytest.mark.parametrize("cell,image_at", [("rnn", "bias"), ("lstm", "bias"), ("lstm", "input")])
def test_every_parameter_gets_a_gradient(cell, image_at):
    m = _model(cell, image_at, dropout=0.3).train()
    feats, tok = torch.randn(4, 6), _tokens()
    tgt = torch.cat([tok[:, 1:], torch.full((4, 1), END_ID)], 1)
    tgt[tok == 0] = 0
    loss = caption_loss(m(feats, tok), tgt)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _targets(tok):
    tgt = torch.cat([tok[:, 1:], torch.full((tok.shape[0], 1), END_ID)], 1)
    tgt[tok == 0] = 0
    return tgt


@pytest.mark.parametrize("cell,seed", [("rnn", 0), ("lstm", 1), ("rnn", 2)])
def test_real_target_logits_equal_every_position_then_picked(cell, seed):
    """The training path's output layer at the real targets only, against the slow twin (every padded position,
    then the real rows picked): logits, loss and every gradient, with dropout drawing the same masks."""
    feats, tok = torch.randn(4, 6), _tokens(seed=seed)
    tgt = _targets(tok)
    runs = []
    for packed in (False, True):
        m = _model(cell, dropout=0.3, seed=seed).train()
        torch.manual_seed(7)
        logits = m(feats, tok, targets=tgt if packed else None)
        loss = caption_loss(logits, tgt, normalizer=9.0)
        loss.backward()
        runs.append((logits if packed else logits[tgt != 0], loss, {n: p.grad for n, p in m.named_parameters()}))
    (a, la, ga), (b, lb, gb) = runs
    assert b.shape == (int((tgt != 0).sum()), 11)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(la, lb, atol=1e-6)
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-6), name


def test_caption_loss_of_real_target_logits_checks_their_count():
    tgt = torch.tensor([[4, 2, 0], [3, 4, 2]])
    logits = torch.randn(2, 3, 5)
    assert torch.allclose(caption_loss(logits[tgt != 0], tgt), caption_loss(logits, tgt))
    with pytest.raises(ValueError, match="do not match"):
        caption_loss(torch.randn(4, 5), tgt)


def test_caption_loss_ignores_padding_and_normalises():
    logits = torch.randn(2, 3, 5)
    tgt = torch.tensor([[4, 2, 0], [3, 4, 2]])
    want = (F.cross_entropy(logits[0, :2], tgt[0, :2], reduction="sum")
            + F.cross_entropy(logits[1], tgt[1], reduction="sum")) / 5
    assert torch.allclose(caption_loss(logits, tgt), want)
    assert torch.allclose(caption_loss(logits, tgt, normalizer=10.0), want / 2)


def test_frequency_bias_is_log_frequency():
    vocab = Vocabulary.build([["a", "dog"], ["a", "cat"], ["a", "dog", "runs"]], min_count=1)
    b = frequency_bias(vocab, n_sentences=3, extra_counts={"<unk>": 2}, floor=0.5)
    counts = {"a": 3, "dog": 2, "cat": 1, "runs": 1, "<end>": 3, "<unk>": 2, "<pad>": 0.5, "<start>": 0.5}
    total = sum(counts.values())
    for w, n in counts.items():
        assert b[vocab.stoi[w]].item() == pytest.approx(torch.log(torch.tensor(n / total)).item(), abs=1e-6)
    m = _model(V=len(vocab))
    m.set_output_bias(b)
    assert torch.equal(m.out.bias.data, b)


def test_bad_inputs_are_refused():
    m = _model(mode="region+image")
    with pytest.raises(ValueError, match="feats must be"):
        m.init_state(torch.randn(2, 6))
    with pytest.raises(ValueError, match="cell"):
        GenConfig(cell="gru").validate()
    with pytest.raises(ValueError, match="unknown"):
        GenConfig.from_dict({"hiden": 3})


def test_feature_standardisation():
    m = _model().eval()
    train = torch.rand(50, 6) * torch.tensor([1.0, 2, 3, 4, 5, 6]) + 3.0
    feats, tok = torch.rand(4, 6) + 3.0, _tokens()
    want = (feats - train.mean(0)) / torch.sqrt(train.var(0, unbiased=False) + 1e-4)
    before = m(want, tok)  # the raw model fed standardised features by hand
    m.set_feature_norm(train)
    assert torch.allclose(m(feats, tok), before, atol=1e-5)
    assert torch.allclose(((train - m.feat_mean) * m.feat_scale).std(0, unbiased=False), torch.ones(6), atol=1e-2)
    assert "feat_mean" in m.state_dict()  # travels with the checkpoint
