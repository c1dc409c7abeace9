"""Retrieval metrics against a slow sort-based twin; protocols; evaluating a model on a store."""
import numpy as np
import pytest
import torch
from dvsa.align.model import AlignConfig, AlignmentModel
from dvsa.align.retrieval import (
    evaluate_retrieval,
    protocol_folds,
    retrieval_metrics,
    retrieval_metrics_slow,
    retrieval_ranks,
    score_collection,
)
from dvsa.data.text import Vocabulary
from test_align_train import make_toy


@pytest.mark.parametrize("n,per", [(1, 1), (7, 5), (30, 3)])
def test_metrics_match_slow_twin(n, per):
    rng = np.random.default_rng(n)
    owner = np.repeat(np.arange(n), per)
    rng.shuffle(owner)
    for scale in (0.1, 3.0):
        scores = rng.normal(size=(n, n * per)) + scale * (owner[None, :] == np.arange(n)[:, None])
        fast, slow = retrieval_metrics(scores, owner), retrieval_metrics_slow(scores, owner)
        for d in ("annotation", "search"):
            for k in ("r1", "r5", "r10", "medr", "meanr"):
                assert fast[d][k] == pytest.approx(slow[d][k]), (d, k)
        assert fast["rsum"] == pytest.approx(slow["rsum"])


@pytest.mark.parametrize("n,per", [(5, 5), (9, 2)])
def test_ties_count_against_the_correct_item(n, per):
    rng = np.random.default_rng(0)
    owner = np.repeat(np.arange(n), per)
    scores = rng.integers(0, 3, size=(n, n * per)).astype(float)  # many ties
    fast, slow = retrieval_metrics(scores, owner), retrieval_metrics_slow(scores, owner)
    for d in ("annotation", "search"):
        for k in ("r1", "r5", "r10", "medr", "meanr"):
            assert fast[d][k] == pytest.approx(slow[d][k]), (d, k)
    # A collapsed model (every score equal) ranks every correct item last.
    flat = retrieval_metrics(np.zeros((n, n * per)), owner)
    assert flat["annotation"]["r1"] == 0 and flat["search"]["r1"] == 0
    assert flat["search"]["medr"] == n and flat["annotation"]["medr"] == n * per - per + 1


def test_ranks_by_hand_and_chunking():
    # 2 images, 4 sentences: sentences 0, 1 of image 0; 2, 3 of image 1.
    scores = np.array([[0.1, 0.9, 0.5, 0.95], [0.2, 0.1, 0.3, 0.0]])
    ann, search = retrieval_ranks(scores, [0, 0, 1, 1])
    assert ann.tolist() == [2, 1]  # image 0: 0.95 (sentence 3, wrong) beats 0.9; image 1: 0.3 is its best
    ann1, search1 = retrieval_ranks(scores, [0, 0, 1, 1], chunk=1)
    assert ann1.tolist() == ann.tolist() and search1.tolist() == search.tolist()
    assert search.tolist() == [2, 1, 2, 2]
    m = retrieval_metrics(scores, [0, 0, 1, 1])
    assert m["annotation"]["r1"] == 50 and m["search"]["r1"] == 25 and m["search"]["medr"] == 2
    assert m["rsum"] == 50 + 100 + 100 + 25 + 100 + 100


def test_metrics_reject_images_without_sentences():
    with pytest.raises(ValueError, match="at least one sentence"):
        retrieval_metrics(np.zeros((3, 2)), [0, 1])


def test_protocol_folds():
    assert protocol_folds(1000, "1k") == [range(1000)]
    assert protocol_folds(300, "1k") == [range(300)]
    assert protocol_folds(5000, "5k") == [range(5000)]
    assert protocol_folds(5000, "coco1k") == [range(i * 1000, (i + 1) * 1000) for i in range(5)]
    with pytest.raises(ValueError, match="at least 1000"):
        protocol_folds(999, "coco1k")
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_folds(10, "2k")


def test_evaluate_retrieval_matches_direct_scoring(tmp_path):
    torch.set_num_threads(1)
    records, store = make_toy(tmp_path / "store", n_train=0, n_val=0, n_test=12)
    vocab = Vocabulary.build([s.tokens for r in records for s in r.sentences], min_count=1)
    cfg = AlignConfig(embed_dim=8, hidden_dim=6, word_dim=5)
    torch.manual_seed(0)
    model = AlignmentModel(cfg, len(vocab), store.dim).eval()
    m = evaluate_retrieval(model, store, records, vocab, protocol="all", sentences_per_image=3)
    ids = [r.id for r in records]
    tokens = [vocab.encode(s.tokens) for r in records for s in r.sentences[:3]]
    owner = np.repeat(np.arange(12), 3)
    # Sentence blocks of 5 and tiny chunks give the same scores as one block.
    a = score_collection(model, store, ids, tokens, sentence_block=5, chunk=7)
    b = score_collection(model, store, ids, tokens)
    torch.testing.assert_close(a, b)
    direct = retrieval_metrics_slow(b.numpy(), owner)
    assert m["n_images"] == 12 and m["n_sentences"] == 36
    for d in ("annotation", "search"):
        assert m[d]["r1"] == pytest.approx(direct[d]["r1"]) and m[d]["medr"] == pytest.approx(direct[d]["medr"])
    # the scores it can hand back (the pipeline's examples) are the same matrix
    kept = evaluate_retrieval(model, store, records, vocab, protocol="all", sentences_per_image=3, keep_scores=True)
    torch.testing.assert_close(kept.pop("scores"), b)
    assert "scores" not in m and kept["annotation"] == m["annotation"]


def test_known_ranks_on_a_3x6_matrix():
    """R@K and Med r by the paper's protocol (Karpathy & Fei-Fei; the neuraltalk / DeViSE-style evaluation):
    annotation rank of an image = best 1-based rank of any of its sentences among all sentences; search rank of
    a sentence = 1-based rank of its image among all images; R@K = % of ranks <= K; Med r = median rank."""
    owner = [0, 0, 1, 1, 2, 2]  # sentences 0, 1 describe image 0; 2, 3 image 1; 4, 5 image 2
    scores = np.array([
        # s0   s1   s2   s3   s4   s5
        [0.9, 0.1, 0.8, 0.3, 0.2, 0.0],  # image 0: s0 (own) first                         -> rank 1
        [0.7, 0.2, 0.1, 0.6, 0.9, 0.3],  # image 1: s4 .9, s0 .7, then s3 .6 (own)          -> rank 3
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.6],  # image 2: s5 (own) first                          -> rank 1
    ])
    # search, column by column: s0 image 0 of (.9 .7 .5) -> 1; s1 (.1 .2 .4) -> 3; s2 image 1 of (.8 .1 .3) -> 3;
    # s3 (.3 .6 .2) -> 1; s4 image 2 of (.2 .9 .1) -> 3; s5 (0 .3 .6) -> 1
    ann, search = retrieval_ranks(scores, owner)
    assert ann.tolist() == [1, 3, 1]
    assert search.tolist() == [1, 3, 3, 1, 3, 1]
    m = retrieval_metrics(scores, owner)
    assert m["annotation"] == pytest.approx({"r1": 200 / 3, "r5": 100.0, "r10": 100.0, "medr": 1.0, "meanr": 5 / 3})
    # Med r of [1, 1, 1, 3, 3, 3]: the middle two average to 2 (VSE's floor(median(0-based)) + 1 also gives 2)
    assert m["search"] == pytest.approx({"r1": 50.0, "r5": 100.0, "r10": 100.0, "medr": 2.0, "meanr": 2.0})
    assert m["rsum"] == pytest.approx(200 / 3 + 100 + 100 + 50 + 100 + 100)
