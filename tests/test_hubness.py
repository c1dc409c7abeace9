"""align/hubness.py: the inverted softmax against a written-out twin, a hub losing the rank it took, and
evaluate_retrieval with a bank against the corrected matrix ranked by hand."""
import math

import numpy as np
import pytest
import torch
from dvsa.align.hubness import HubnessConfig, bank_records, corrected
from dvsa.align.model import AlignConfig, AlignmentModel
from dvsa.align.retrieval import evaluate_retrieval, retrieval_metrics, retrieval_metrics_slow, score_collection
from dvsa.data.text import Vocabulary
from test_align_train import make_toy


def test_the_correction_equals_the_formula_written_out():
    rng = np.random.default_rng(0)
    n, s, nb, sb, beta = 4, 7, 5, 6, 0.7
    scores, bi, bs = rng.normal(size=(n, s)) * 3, rng.normal(size=(nb, s)) * 3, rng.normal(size=(n, sb)) * 3
    ann, search = corrected(torch.tensor(scores), torch.tensor(bi), torch.tensor(bs), beta)
    for i in range(n):
        for j in range(s):
            col = math.log(sum(math.exp(beta * bi[b, j]) for b in range(nb))) / beta
            row = math.log(sum(math.exp(beta * bs[i, b]) for b in range(sb))) / beta
            assert float(ann[i, j]) == pytest.approx(scores[i, j] - col, abs=1e-5)
            assert float(search[i, j]) == pytest.approx(scores[i, j] - row, abs=1e-5)
    # large scores do not overflow (log-sum-exp), beta must be positive
    big, _ = corrected(torch.tensor(scores) * 1e3, torch.tensor(bi) * 1e3, torch.tensor(bs) * 1e3, 2.0)
    assert torch.isfinite(big).all()
    with pytest.raises(ValueError, match="beta"):
        corrected(torch.tensor(scores), torch.tensor(bi), torch.tensor(bs), 0.0)
    # a beta per direction; None leaves that direction alone
    ann2, search2 = corrected(torch.tensor(scores), torch.tensor(bi), torch.tensor(bs), None, beta)
    torch.testing.assert_close(ann2, torch.tensor(scores).float())
    torch.testing.assert_close(search2, search)


def test_a_hub_sentence_loses_the_first_rank_it_took():
    # 3 images, one sentence each; sentence 2 scores 1.0 with every image (a hub), the right sentence 0.8
    scores = torch.tensor([[0.8, 0.0, 1.0], [0.0, 0.8, 1.0], [0.0, 0.0, 1.0]])
    owner = np.arange(3)
    assert retrieval_metrics(scores, owner)["annotation"]["r1"] == pytest.approx(100 / 3)
    bank_images = torch.tensor([[0.1, 0.1, 1.0], [0.0, 0.0, 1.0]])  # the hub scores high with the bank too
    bank_sentences = torch.zeros(3, 2)
    ann, search = corrected(scores, bank_images, bank_sentences, 5.0)
    m = retrieval_metrics(ann, owner, search)
    assert m["annotation"]["r1"] == 100.0
    assert m["search"] == retrieval_metrics(scores, owner)["search"]  # every image equally central: no change


def test_evaluate_retrieval_with_a_bank_ranks_the_corrected_matrix(tmp_path):
    torch.set_num_threads(1)
    records, store = make_toy(tmp_path / "store", n_train=8, n_val=0, n_test=10)
    test = [r for r in records if r.split == "test"]
    train = [r for r in records if r.split == "train"]
    vocab = Vocabulary.build([s.tokens for r in records for s in r.sentences], min_count=1)
    torch.manual_seed(0)
    model = AlignmentModel(AlignConfig(embed_dim=8, hidden_dim=6, word_dim=5), len(vocab), store.dim).eval()
    bank = bank_records(train, store, 6, seed=1)
    assert len(bank) == 6 and [r.id for r in bank] == [r.id for r in train if r in bank]  # reader order
    assert bank_records(train, store, 100) == train
    m = evaluate_retrieval(model, store, test, vocab, protocol="all", sentences_per_image=3, bank=bank,
                           betas=(0.5, (2.0, None)), keep_scores=True)
    plain = evaluate_retrieval(model, store, test, vocab, protocol="all", sentences_per_image=3)
    assert m["plain"]["annotation"] == plain["annotation"] and m["plain"]["rsum"] == plain["rsum"]
    ids = [r.id for r in test]
    tokens = [vocab.encode(s.tokens) for r in test for s in r.sentences[:3]]
    bank_tokens = [vocab.encode(s.tokens) for r in bank for s in r.sentences[:3]]
    owner = np.repeat(np.arange(len(test)), 3)
    s = score_collection(model, store, ids, tokens, progress=False)
    bi = score_collection(model, store, [r.id for r in bank], tokens, progress=False)
    bs = score_collection(model, store, ids, bank_tokens, progress=False)
    assert m["bank"]["images"] == 6 and m["bank"]["sentences"] == 18
    for row, beta in zip(m["bank"]["rows"], ((0.5, 0.5), (2.0, None))):
        ann, search = corrected(s, bi, bs, *beta)
        want_a, want_s = retrieval_metrics_slow(ann.numpy(), owner), retrieval_metrics_slow(search.numpy(), owner)
        assert row["beta"] == list(beta)
        for k in ("r1", "r5", "medr"):
            assert row["annotation"][k] == pytest.approx(want_a["annotation"][k])
            assert row["search"][k] == pytest.approx(want_s["search"][k])
    assert m["annotation"] == m["bank"]["rows"][0]["annotation"]
    assert m["bank"]["rows"][1]["search"] == m["plain"]["search"]  # that direction left alone
    torch.testing.assert_close(m["scores_annotation"], corrected(s, bi, bs, 0.5)[0])


def test_the_defaults():
    cfg = HubnessConfig()
    assert cfg.images > 0 and cfg.sentences_per_image >= 1 and cfg.beta is None and all(b > 0 for b in cfg.betas)
