"""The region-attention generator (generate.attention): batched beam search against a one-image twin, attention
weights and masks, the doubly stochastic penalty, learning to look at the right region, checkpoints, and the
`dvsa caption --attention` pictures and the Captioner's weights."""
import json

import dvsa.scripts.caption as caption_cli
import numpy as np
import pytest
import torch
from dvsa.data.checkpoint import load_checkpoint
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Sentence
from dvsa.data.text import END_ID, START_ID
from dvsa.generate.attention import AttentionModel, doubly_stochastic
from dvsa.generate.captioner import Captioner
from dvsa.generate.decode import beam_search, beam_search_single, decode, greedy
from dvsa.generate.inputs import pad_sets, region_sets
from dvsa.generate.model import GenConfig
from dvsa.generate.train import load_generator, train_generator
from PIL import Image
from test_generate_train import make_toy as make_full_toy
from test_generate_train import small

torch.set_num_threads(1)
V, D, N = 13, 6, 5
COLORS = ["red", "green", "blue", "black", "white", "pink", "brown", "grey"]


def _cfg(**kw):
    base = {"arch": "attention", "input": "regions", "hidden": 16, "embed": 8, "att_dim": 12, "dropout": 0.0,
            "prior_weight": 0.0}
    return GenConfig(**{**base, **kw})


def _random_model(seed, gate=True):
    """An untrained float64 model whose captions end at varied lengths and whose attention is far from uniform."""
    torch.manual_seed(seed)
    m = AttentionModel(_cfg(att_gate=gate), V, D).double()
    with torch.no_grad():
        m.out.weight.mul_(3.0)
        m.w_e.weight.mul_(4.0)
        m.w_x.weight[:, 8:].mul_(3.0)  # the context moves the LSTM: captions depend on where it looks
        m.out.bias[END_ID] = float(torch.empty(()).uniform_(-2.0, 2.5))
    return m.eval()


def _random_sets(seed, b=5):
    """feats float64 [b, N, D] and a mask with 1 .. N real rows per image (padded rows hold junk)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, N, D, generator=g, dtype=torch.float64) * 2
    n_real = [1 + (i * 3 + seed) % N for i in range(b)]
    mask = torch.tensor([[r < n for r in range(N)] for n in n_real])
    return feats, mask, n_real


@pytest.mark.parametrize("seed,gate", [(s, s % 2 == 0) for s in range(6)])
def test_batched_beam_equals_one_image_beam(seed, gate):
    """Same captions, scores and attention as the plain one-image beam search on the image's *unpadded* set."""
    m = _random_model(seed, gate)
    feats, mask, n_real = _random_sets(seed)
    for K in (1, 3, 5):
        for ln in (0.0, 1.0):
            min_len = (K + int(ln)) % 3
            batched = beam_search(m, feats, K, 8, ln, min_len, mask, attention=True)
            for i in range(len(feats)):
                one = beam_search_single(m, feats[i, : n_real[i]], K, 8, ln, min_len, attention=True)
                assert [h[0] for h in one] == [h[0] for h in batched[i]], (K, ln, i)
                for (_, a, att1), (toks, b, attb) in zip(one, batched[i]):
                    assert abs(a - b) < 1e-9
                    assert attb.shape == (len(att1), N) and len(att1) in (len(toks), len(toks) + 1)
                    assert torch.allclose(attb[:, : n_real[i]], att1, atol=1e-9)
                    assert torch.all(attb[:, n_real[i] :] == 0)


def test_beam_one_is_greedy_and_logprobs_match_teacher_forcing():
    m = _random_model(11)
    feats, mask, _ = _random_sets(11, b=6)
    g = greedy(m, feats, 9, 1, mask, attention=True)
    b1 = [h[0] for h in beam_search(m, feats, 1, 9, 1.0, 1, mask, attention=True)]
    for (t1, l1, a1), (t2, l2, a2) in zip(g, b1):
        assert t1 == t2 and abs(l1 - l2) < 1e-9 and torch.allclose(a1, a2, atol=1e-12)
    assert [h[0] for h in decode(m, feats, "beam", 1, 9, mask=mask)] == [h[0] for h in g]
    with torch.no_grad():  # the decoders' logprob and weights are the teacher-forced ones
        for i, (toks, lp, att) in enumerate(g):
            inp = torch.tensor([[START_ID] + toks])
            logits, alphas = m(feats[i : i + 1], inp, mask[i : i + 1], return_attention=True)
            logp = torch.log_softmax(logits[0], -1)
            tgt = toks + [END_ID]
            n = len(att)
            assert abs(sum(float(logp[t, tgt[t]]) for t in range(n)) - lp) < 1e-9
            assert torch.allclose(alphas[0, :n], att, atol=1e-12)


def test_real_target_logits_equal_every_position_then_picked():
    """The training path (output layer at the real targets only) against every position, then picked."""
    m = _random_model(3).train()
    feats, mask, _ = _random_sets(3)
    g = torch.Generator().manual_seed(4)
    tok = torch.randint(4, V, (5, 7), generator=g)
    tok[:, 0] = START_ID
    tok[1, 3:] = 0
    tok[4, 5:] = 0
    tgt = torch.cat([tok[:, 1:], torch.full((5, 1), END_ID)], 1)
    tgt[tok == 0] = 0
    out = []
    for packed in (False, True):
        m.zero_grad()
        torch.manual_seed(11)
        logits, alphas = m(feats, tok, mask, return_attention=True, targets=tgt if packed else None)
        picked = logits if packed else logits[tgt != 0]
        picked.logsumexp(-1).sum().backward()
        out.append((picked, alphas, [p.grad.clone() for p in m.parameters()]))
    assert torch.allclose(out[0][0], out[1][0]) and torch.allclose(out[0][1], out[1][1])
    assert all(torch.allclose(a, b) for a, b in zip(out[0][2], out[1][2]))


def test_attention_sums_to_one_over_real_regions_and_is_zero_on_padding():
    m = _random_model(3)
    feats, mask, _ = _random_sets(3, b=7)
    tokens = torch.randint(3, V, (7, 6))
    with torch.no_grad():
        _, alphas = m(feats, tokens, mask, return_attention=True)  # [B, T, N]
    assert alphas.shape == (7, 6, N)
    assert torch.allclose(alphas.sum(-1), torch.ones(7, 6, dtype=torch.float64), atol=1e-12)
    assert torch.all(alphas.masked_select(~mask[:, None, :].expand_as(alphas)) == 0)
    assert alphas.masked_select(mask[:, None, :].expand_as(alphas)).min() > 0
    # junk in padded rows changes nothing
    junk = feats.clone()
    junk[~mask] = 1e3
    with torch.no_grad():
        logits2, alphas2 = m(junk, tokens, mask, return_attention=True)
        logits1 = m(feats, tokens, mask)
    assert torch.allclose(logits1, logits2, atol=1e-9) and torch.allclose(alphas, alphas2, atol=1e-12)


def test_doubly_stochastic_penalty_is_its_formula():
    g = torch.Generator().manual_seed(0)
    B, T = 4, 6
    alphas = torch.rand(B, T, N, generator=g, dtype=torch.float64)
    targets = torch.randint(3, V, (B, T), generator=g)
    targets[1, 4:] = 0  # PAD: these steps do not count
    targets[2, 2:] = 0
    mask = torch.rand(B, N, generator=g) > 0.3
    mask[:, 0] = True
    want = 0.0
    for b in range(B):
        for i in range(N):
            if mask[b, i]:
                cover = sum(float(alphas[b, t, i]) for t in range(T) if int(targets[b, t]) != 0)
                want += (1.0 - cover) ** 2
    assert abs(float(doubly_stochastic(alphas, targets, mask, 0.7)) - 0.7 * want) < 1e-10
    assert abs(float(doubly_stochastic(alphas, targets, None, 1.0))
               - sum((1 - float(alphas[b, :, i][targets[b] != 0].sum())) ** 2 for b in range(B) for i in range(N))
               ) < 1e-10


# ------------------------------------------------------------------------------ a toy that needs attention
TOY_D = 12  # dims 0..7 colour, 8..10 the whole image, 11 the marker


def make_toy(tmp, n=160, seed=0):
    """Images with 1 whole-image row and 4 regions of 4 different colours out of 8 (dims 0..7), one of them
    marked (dim 11). The mean of the rows (the LSTM's initial state) tells which colours are there, not which
    is marked: attention tells the marked region's colour, which the caption names the marked region's colour first: "<colour>
    ball" (first, so that the step emitting it is the only one that can have looked for it).
    Returns (records, store, {image id: the marked region's row})."""
    rng = np.random.default_rng(seed)
    w = FeatureStoreWriter(tmp / "store", {"dim": TOY_D, "producer": "test"}, part_size=40)
    recs, target = [], {}
    for i in range(n):
        k = 4  # regions besides the whole image
        cols = rng.permutation(len(COLORS))[:k]
        row = 1 + int(rng.integers(k))  # the marked region
        feats = rng.normal(0, 0.05, (k + 1, TOY_D)).astype(np.float32)
        feats[0, 8:11] += 1.0  # the whole image: no colour, no marker
        for j in range(1, k + 1):
            feats[j, cols[j - 1]] += 1.0
        feats[row, 11] += 1.0
        boxes = [[0, 0, 40, 40]] + [[4 * j, 4 * j, 4 * j + 12, 4 * j + 12] for j in range(1, k + 1)]
        w.add(str(i), boxes, feats, feats[0], (40, 40))
        toks = [COLORS[cols[row - 1]], "ball"]
        recs.append(ImageRecord(id=str(i), path=f"{i}.png", split="train" if i < n - 32 else "val",
                                sentences=[Sentence(i * 5 + s, " ".join(toks), toks) for s in range(2)]))
        target[str(i)] = row
    w.close()
    return recs, FeatureStore(tmp / "store"), target


def _toy_cfg(**kw):
    base = {"hidden": 32, "embed": 16, "att_dim": 16, "min_count": 1, "batch_size": 16, "lr": 0.01, "patience": 0,
            "val_images": 32, "epochs": 25, "dropout": 0.0, "beam": 3}
    return _cfg(**{**base, **kw})


def _looks_right(model, vocab, store, recs, target):
    """(captions right, fraction of colour words whose most-attended row is the marked region, mean weight on it,
    number of images)."""
    val = [r for r in recs if r.split == "val"]
    feats, mask = region_sets(store, [r.id for r in val])
    hyps = greedy(model, feats, 6, 1, mask, attention=True)
    right = sum(vocab.decode(t) == r.sentences[0].tokens for (t, _, _), r in zip(hyps, val))
    looks = [int(a[0].argmax()) == target[r.id] for (t, _, a), r in zip(hyps, val) if t]
    weight = float(np.mean([float(a[0, target[r.id]]) for (t, _, a), r in zip(hyps, val) if t]))
    return right, sum(looks) / max(1, len(looks)), weight, len(val)


@pytest.fixture(scope="module")
def trained_toy(tmp_path_factory):
    """(records, store, target rows, checkpoint) of the toy trained once for this module (~1 min on one core)."""
    tmp = tmp_path_factory.mktemp("attention_toy")
    recs, store, target = make_toy(tmp)
    ckpt = train_generator(_toy_cfg(), store, recs, tmp / "run", progress=False, log=lambda *a: None)
    return recs, store, target, ckpt


def test_a_trained_toy_looks_at_the_right_region(trained_toy, tmp_path):
    recs, store, target, ckpt = trained_toy
    model, vocab, _, _ = load_generator(ckpt)
    right, looks, weight, n = _looks_right(model, vocab, store, recs, target)
    # measured (seeds 0..3 of the toy): all captions right, the marked region the most attended for 94..100 %
    assert right >= n - 2 and looks >= 0.8, (right, looks, weight, n)
    # the untrained model (epochs=0) neither says nor looks (measured: 0 right, 0..44 % looks)
    ck0 = train_generator(_toy_cfg(epochs=0), store, recs, tmp_path / "run0", progress=False, log=lambda *a: None)
    right0, looks0, _, _ = _looks_right(*load_generator(ck0)[:2], store, recs, target)
    assert right0 <= 2 and looks0 <= 0.6, (right0, looks0)


def test_checkpoint_round_trip(tmp_path):
    recs, store, _ = make_toy(tmp_path, n=40)
    ckpt = train_generator(_toy_cfg(epochs=2, att_gate=False), store, recs, tmp_path / "run", progress=False,
                           log=lambda *a: None)
    ck = load_checkpoint(ckpt, kind="generate")  # torch.load(weights_only=True) inside
    assert ck["config"]["arch"] == "attention" and ck["config"]["att_gate"] is False and "vocab" in ck
    model, vocab, cfg, _ = load_generator(ckpt)
    assert isinstance(model, AttentionModel) and cfg.input == "regions" and model.w_b is None
    again = AttentionModel(cfg, len(vocab), TOY_D)
    again.load_state_dict(model.state_dict())
    feats, mask = region_sets(store, ["0", "1", "2"])
    a = beam_search(model, feats, 3, 6, mask=mask, attention=True)
    b = beam_search(again.eval(), feats, 3, 6, mask=mask, attention=True)
    assert [[h[:2] for h in x] for x in a] == [[h[:2] for h in x] for x in b]
    assert torch.equal(model.feat_mean, again.feat_mean) and float(model.feat_scale.std()) > 0


def test_config_checks_arch_and_input():
    with pytest.raises(ValueError, match="arch='attention' goes with input='regions'"):
        GenConfig(arch="attention").validate()
    with pytest.raises(ValueError, match="goes with"):
        GenConfig(input="regions").validate()
    with pytest.raises(ValueError):
        pad_sets([np.zeros((0, 3))])


# ------------------------------------------------------------------------------ dvsa caption and Captioner
RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "black": (10, 10, 10),
       "white": (250, 250, 250), "pink": (250, 150, 200), "brown": (120, 70, 20), "grey": (160, 160, 160)}
BACKGROUND, FRAME = (0, 90, 90), (255, 255, 0)


class SquaresEncoder:
    """Stands in for RegionEncoder on pictures of coloured squares (`_squares`): the whole image (row 0), then one
    region per square (found by colour), the square with a yellow frame carrying the marker."""

    def encode(self, pil, boxes=None):
        assert boxes is None  # the attention generator detects its regions
        a = np.asarray(pil, np.int32)
        w, h = pil.size
        out_boxes, feats = [[0, 0, w, h]], []
        f0 = np.zeros(TOY_D, np.float32)
        f0[8:11] = 1.0
        feats.append(f0)
        for c, name in enumerate(COLORS):
            ys, xs = np.nonzero(np.abs(a - np.array(RGB[name])).sum(-1) < 12)
            if len(xs) == 0:
                continue
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            f = np.zeros(TOY_D, np.float32)
            f[c] = 1.0
            frame = a[max(0, y1 - 2), x1:x2]
            f[11] = float(np.abs(frame - np.array(FRAME)).sum(-1).mean() < 10)
            out_boxes.append([x1, y1, x2, y2])
            feats.append(f)
        return np.array(out_boxes, np.float32), np.stack(feats), f0


def _squares(path, colours, marked):
    """A picture of squares of `colours` side by side, the `marked`-th framed."""
    im = Image.new("RGB", (28 * len(colours) + 4, 30), BACKGROUND)
    for j, c in enumerate(colours):
        x = 5 + 28 * j
        if j == marked:
            im.paste(FRAME, (x - 3, 4, x + 21, 26))
        im.paste(RGB[c], (x, 7, x + 18, 23))
    im.save(path)


def test_caption_command_draws_attention_and_the_api_returns_weights(trained_toy, tmp_path, monkeypatch):
    ckpt = trained_toy[3]
    monkeypatch.setattr(caption_cli, "make_encoder", lambda meta, device: SquaresEncoder())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _squares(imgs / "a.png", ["red", "blue", "white", "pink"], 1)
    _squares(imgs / "b.png", ["green", "black", "brown", "grey"], 3)
    out, pics = tmp_path / "caps.json", tmp_path / "pics"
    rc = caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(out), "--beam", "3",
                           "--extras", "--attention", str(pics), "--quiet"])
    assert rc == 0
    res = {c["image_id"]: c for c in json.loads(out.read_text())}
    want = {"a": ("blue ball", 2), "b": ("grey ball", 4)}  # caption, the marked square's row (0 = whole image)
    assert {k: v["caption"] for k, v in res.items()} == {k: v[0] for k, v in want.items()}
    for iid, (_, row) in want.items():  # the colour word looked at the marked square
        att = res[iid]["attention"]
        boxes = res[iid]["boxes"]
        assert [x["word"] for x in att] == res[iid]["caption"].split() and len(boxes) == 5
        assert att[0]["row"] == row and att[0]["box"] == boxes[row], att[0]
        assert all(abs(sum(x["weights"]) - 1) < 1e-4 for x in att)
    drawn = sorted(pics.glob("*.png"))
    assert len(drawn) == 2 and all(Image.open(p).size[0] == 448 for p in drawn)
    # the Captioner: same caption, the weights with it
    cap = Captioner.load(ckpt, encoder=SquaresEncoder())
    one = cap.caption(str(imgs / "a.png"), beam=3)
    assert one["caption"] == "blue ball" and one["attention"][0]["row"] == 2 and len(one["boxes"]) == 5
    assert one["attention"][0]["weights"] == res["a"]["attention"][0]["weights"]
    # a full-frame checkpoint has nothing to draw
    (tmp_path / "f").mkdir()
    frecs, fstore, _ = make_full_toy(tmp_path / "f")
    fck = train_generator(small(epochs=0), fstore, frecs, tmp_path / "frun", progress=False, log=lambda *a: None)
    with pytest.raises(Exception, match="not an attention generator"):
        caption_cli.main(["--checkpoint", str(fck), "--images", str(imgs), "--out", str(out),
                          "--attention", str(pics)])
