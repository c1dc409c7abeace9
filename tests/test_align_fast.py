"""The fast training path against its slow twins: `WordMax` (eq. 8 with the gradient to the best region only)
against autograd through the loops of `image_sentence_scores_slow`, precollated batches against `collate`, and
training on the new path against the old one."""
import numpy as np
import pytest
import torch
from align_fakes import one_thread  # noqa: F401 (autouse fixture)
from dvsa.align.bench_train import old_words
from dvsa.align.data import (
    PairSet,
    batch_source,
    build_pairs,
    collate,
    epoch_batches,
    precollate,
)
from dvsa.align.model import AlignmentModel
from dvsa.align.scores import WordMax, _word_max, image_sentence_scores, image_sentence_scores_slow
from dvsa.align.train import make_optimizer, train_alignment, train_epoch
from dvsa.data.checkpoint import load_checkpoint
from dvsa.data.memstore import MemoryStore
from dvsa.data.records import select_split
from dvsa.data.text import Vocabulary
from test_align_train import DIM, make_toy, toy_cfg


def embeddings(seed, b=5, r=4, n=7, t=6, h=8):
    """float64 v [B, R, H], rmask [B, R] (holes, and row 0 hidden on some images as whole_image_drop does),
    s [S, T, H], wmask [S, T] (one sentence without words). Random normal: ties have probability zero."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, r, h, generator=g, dtype=torch.float64)
    rmask = torch.rand(b, r, generator=g) < 0.6
    rmask[:, 1] = True
    rmask[: b // 2, 0] = False
    s = torch.randn(n, t, h, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    lengths[0], lengths[-1] = t, 0
    wmask = torch.arange(t)[None, :] < lengths[:, None]
    return v, rmask, s, wmask


@pytest.mark.parametrize("norm", ["none", "words"])
@pytest.mark.parametrize("chunk", [1, 23, 1 << 24])
def test_fast_scores_and_gradients_equal_the_slow_twin(norm, chunk):
    v, rmask, s, wmask = embeddings(1)
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # dL/dscores
    out = []
    for score in (lambda *a: image_sentence_scores(*a, chunk=chunk, norm=norm),
                  lambda *a: image_sentence_scores_slow(*a, norm=norm)):
        v1, s1 = v.clone().requires_grad_(), s.clone().requires_grad_()
        scores = score(v1, rmask, s1, wmask)
        (scores * w).sum().backward()
        out.append((scores.detach(), v1.grad, s1.grad))
    assert out[0][0].dtype == torch.float64
    for fast, slow in zip(*out):
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    fv, fs = out[0][1:]
    assert fv[~rmask].abs().max() == 0 and fs[~wmask].abs().max() == 0  # padding gets nothing
    assert fv.abs().sum() > 0 and fs.abs().sum() > 0


def test_fast_path_equals_the_dense_autograd_path_and_inference_is_untouched():
    """sparse_grad=False (the old path: autograd through the blocks) gives the same scores and gradients."""
    v, rmask, s, wmask = embeddings(3, b=6, r=5, n=9, t=7)
    out = []
    for sparse in (True, False):
        v1, s1 = v.clone().requires_grad_(), s.clone().requires_grad_()
        scores = image_sentence_scores(v1, rmask, s1, wmask, chunk=40, norm="words", sparse_grad=sparse)
        (scores ** 2).sum().backward()
        out.append((scores.detach(), v1.grad, s1.grad))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(image_sentence_scores(v, rmask, s, wmask), out[0][0] * wmask.sum(1).clamp_min(1))


def test_word_max_gradient_reaches_only_the_winner_and_one_sided_inputs():
    """A region that wins no word gets no gradient; v or words alone may require a gradient."""
    g = torch.Generator().manual_seed(4)
    v = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    words = torch.randn(5, 6, generator=g, dtype=torch.float64)
    best = (v @ words.T).argmax(1)  # [B, W]
    v1 = v.clone().requires_grad_()
    WordMax.apply(v1, words, 1 << 20).sum().backward()
    wins = torch.zeros(3, 4, dtype=torch.bool).scatter_(1, best, True)  # [B, R] region won some word
    assert not wins.all()  # the case this test is about occurs
    assert torch.equal(v1.grad.abs().sum(-1) > 0, wins)
    w1 = words.clone().requires_grad_()
    WordMax.apply(v, w1, 7).sum().backward()
    torch.testing.assert_close(w1.grad, v[torch.arange(3)[:, None], best].sum(0), rtol=1e-12, atol=1e-12)


def test_word_max_with_bf16_dot_products_keeps_each_words_best_region():
    """dot_dtype=bfloat16 on embeddings that are bf16 values (as autocast returns them): each word's chosen region
    is a best one up to bf16 rounding of the products, its value is the fp32 best within that rounding, and the
    gradient is the fp32 WordMax gradient through the regions chosen."""
    g = torch.Generator().manual_seed(5)
    v = torch.randn(6, 5, 64, generator=g).bfloat16().float()
    words = torch.randn(40, 64, generator=g).bfloat16().float()
    best32, arg32 = _word_max(v, words, 1 << 20)
    best16, arg16 = _word_max(v, words, 97, dot_dtype=torch.bfloat16)
    assert best16.dtype == torch.float32 and arg16.shape == (6, 40)
    chosen = torch.einsum("bwh,wh->bw", v[torch.arange(6)[:, None], arg16], words)  # fp32 products of the choice
    tol = 2.0**-7 * best32.abs() + 1e-6  # a couple of bf16 roundings of the products
    assert bool(((best32 - chosen) <= tol).all()) and bool(((best16 - best32).abs() <= tol).all())
    assert (arg16 == arg32).float().mean() > 0.9  # rounding changes only near-ties
    v1, w1 = v.clone().requires_grad_(), words.clone().requires_grad_()
    WordMax.apply(v1, w1, 1 << 20, torch.bfloat16).sum().backward()
    rows = arg16 + torch.arange(6)[:, None] * 5
    bf16 = {"rtol": 2.0**-8, "atol": 1e-6}  # the gradients are rounded to bf16 once
    torch.testing.assert_close(w1.grad, v.reshape(30, 64)[rows].sum(0), **bf16)
    assert v1.grad.dtype == torch.float32 and torch.equal(v1.grad.abs().sum(-1) > 0,
                                                       torch.zeros(6, 5, dtype=torch.bool).scatter_(1, arg16, True))


def test_word_max_bf16_backward_as_products_equals_the_gathers():
    """With bf16 dot products the backward is two bf16 products with the winners' one-hot matrix (when it has at
    most `chunk` elements); under a smaller chunk it is the fp32 gather-and-sum passes. On random weights g both
    give the same gradients, within one bf16 rounding of g and of the result, for the same chosen regions."""
    g = torch.Generator().manual_seed(6)
    b, r, n, h = 7, 6, 33, 48
    v = torch.randn(b, r, h, generator=g).bfloat16().float()
    words = torch.randn(n, h, generator=g).bfloat16().float()
    weights = torch.randn(b, n, generator=g)
    grads = []
    for chunk in (b * r * n, b * r * n - 1):  # the products; the gathers
        v1, w1 = v.clone().requires_grad_(), words.clone().requires_grad_()
        (WordMax.apply(v1, w1, chunk, torch.bfloat16) * weights).sum().backward()
        grads.append((v1.grad, w1.grad))
    (gv_mm, gw_mm), (gv_bag, gw_bag) = grads
    assert gv_mm.dtype == gw_mm.dtype == torch.float32
    assert torch.equal(gv_mm.bfloat16().float(), gv_mm)  # rounded to bf16 once
    scale = {"rtol": 2.0**-7, "atol": 2.0**-7 * float(gw_bag.abs().max())}
    torch.testing.assert_close(gv_mm, gv_bag, **scale)
    torch.testing.assert_close(gw_mm, gw_bag, **scale)
    assert torch.equal(gv_mm != 0, gv_bag != 0)  # the same regions reached

def varied_store(n_images=9, seed=0):
    """A MemoryStore whose images have 1..5 regions, and PairSet of 1..3 sentences of 1..6 words per image."""
    rng = np.random.default_rng(seed)
    store = MemoryStore(DIM)
    image_pair, tokens = [], []
    for k in range(n_images):
        r = int(rng.integers(1, 6))
        boxes = np.concatenate([[[0, 0, 64, 48]], rng.uniform(0, 40, (r - 1, 4))]).astype(np.float32)
        store.add(f"i{k}", boxes, rng.normal(size=(r, DIM)), rng.normal(size=DIM), (64, 48))
        for _ in range(int(rng.integers(1, 4))):
            image_pair.append(k)
            tokens.append(rng.integers(4, 30, int(rng.integers(1, 7))).tolist())
    return PairSet(store.ids, np.array(image_pair), tokens, list(range(len(tokens))), 0, 0), store


def test_precollated_batches_equal_collate():
    pairs, store = varied_store()
    tensors = precollate(pairs, store)
    assert tensors.feats.shape == (9, 5, DIM) and tensors.tokens.shape[0] == len(pairs)
    batches = epoch_batches(len(pairs), 4, 0, 0) + [np.arange(len(pairs)), np.array([3])]
    for idx in batches:
        want, got = collate(pairs, idx, store), tensors.batch(idx)
        assert want.keys() == got.keys()
        for k in want:
            assert want[k].dtype == got[k].dtype and want[k].shape == got[k].shape, k
            assert torch.equal(want[k], got[k]), k
    fetch, how = batch_source(pairs, store, max_gb=1.0)
    assert how == "precollated" and torch.equal(fetch(batches[0])["feats"], collate(pairs, batches[0], store)["feats"])
    fetch, how = batch_source(pairs, store, max_gb=1e-9)  # does not fit: per batch
    assert how == "per batch" and torch.equal(fetch(batches[0])["tokens"], collate(pairs, batches[0], store)["tokens"])


def _run_epoch(pairs, store, cfg, fast: bool):
    torch.manual_seed(0)
    model = AlignmentModel(cfg, 40, DIM) if fast else old_words(AlignmentModel(cfg, 40, DIM))
    opt = make_optimizer(cfg, model)
    source = precollate(pairs, store).batch if fast else None
    stats = [train_epoch(model, opt, cfg, pairs, store, e, torch.device("cpu"), progress=False, source=source,
                         sparse_grad=fast, max_steps=4) for e in range(2)]
    return [s["loss"] for s in stats], model.state_dict()


@pytest.mark.parametrize("kw", [{}, {"score_norm": "words", "whole_image_drop": 0.4, "loss": "hardest"},
                                {"optimizer": "adam", "geometry": True, "geometry_bins": 2, "dropout": 0.0}])
def test_training_on_the_new_path_equals_the_old_path(tmp_path, kw):
    """Two epochs of 4 steps: the same losses and weights, old path (collate, padded words, dense gradient) or
    new (precollated, real words only, WordMax), with dropout and whole-image dropout drawn alike (float32: 1e-4 is far above the
    summation-order differences)."""
    pairs, store = varied_store(n_images=30, seed=1)
    cfg = toy_cfg(**{"batch_size": 8, "dropout": 0.3, "lr": 0.01, **kw})
    old_losses, old_state = _run_epoch(pairs, store, cfg, fast=False)
    new_losses, new_state = _run_epoch(pairs, store, cfg, fast=True)
    np.testing.assert_allclose(new_losses, old_losses, rtol=1e-4, atol=1e-6)
    for k in old_state:
        torch.testing.assert_close(new_state[k], old_state[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.equal(old_state[k], AlignmentModel(cfg, 40, DIM).state_dict()[k]) for k in old_state)


def test_train_alignment_precollated_or_per_batch_gives_the_same_run(tmp_path):
    """`precollate_gb` changes where batches come from, never what they hold: identical weights; and a run may
    resume with another value."""
    records, store = make_toy(tmp_path / "store", n_train=10, n_val=0, n_test=0)
    quiet = {"progress": False, "log": lambda *a: None}
    logs = []
    train_alignment(records, store, tmp_path / "a", toy_cfg(epochs=1), progress=False, log=logs.append)
    assert "train batches: precollated" in logs
    train_alignment(records, store, tmp_path / "b", toy_cfg(epochs=1, precollate_gb=0.0), **quiet)
    a, b = (load_checkpoint(tmp_path / n / "last.pt", kind="align") for n in "ab")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    train_alignment(records, store, tmp_path / "b", toy_cfg(epochs=2), **quiet)  # resumes with the default
    assert load_checkpoint(tmp_path / "b" / "last.pt", kind="align")["epoch"] == 2
    with pytest.raises(ValueError, match="precollate_gb"):
        toy_cfg(precollate_gb=-1.0)
    # the pairs the pipeline builds: one image's sentences share its row of the precollated regions
    train = select_split(records, "train")
    vocab = Vocabulary.build([s.tokens for r in train for s in r.sentences], min_count=1)
    pairs = build_pairs(train, store, vocab)
    tensors = precollate(pairs, store)
    assert tensors.feats.shape[0] == len(pairs.image_ids) == 10 and len(pairs) == 50


@pytest.mark.parametrize("train", [False, True])
def test_embed_words_on_real_words_equals_the_padded_twin(train):
    """float64, sentences of 0..7 words padded to 9 (0 words: an empty row), dropout drawn alike: the same
    embeddings and the same gradient for every parameter."""
    from test_align_model import tiny_cfg

    torch.manual_seed(0)
    model = AlignmentModel(tiny_cfg(dropout=0.3, train_words="yes"), 20, 5).double().train(train)
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([3, 1, 7, 7, 0, 5])
    tokens = torch.randint(4, 20, (6, 9), generator=g) * (torch.arange(9)[None, :] < lengths[:, None])
    out = []
    for embed in (model.embed_words, model.embed_words_slow):
        model.zero_grad()
        torch.manual_seed(5)
        s = embed(tokens, lengths)
        (s * torch.randn(s.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)).sum().backward()
        out.append((s.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (fast, fast_grads), (slow, slow_grads) = out
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    assert fast_grads.keys() == slow_grads.keys() and "fwd.weight" in fast_grads
    for k in slow_grads:
        torch.testing.assert_close(fast_grads[k], slow_grads[k], rtol=1e-12, atol=1e-12, msg=k)
