"""Consensus re-ranking: neighbours against a brute-force ranking, the consensus score against the CIDEr-D of
single bank images, hand-made choices, the bank file, and the captions of a trained toy generator."""
import numpy as np
import pytest
import torch
from dvsa.data.checkpoint import CheckpointError
from dvsa.generate.caption_eval import caption_split
from dvsa.generate.consensus import BANK_FILE, CaptionBank, bank_for
from dvsa.generate.decode import beam_search
from dvsa.generate.inputs import full_frame_features
from dvsa.generate.train import load_generator, train_generator
from test_generate_train import make_toy, small

torch.set_num_threads(1)


def random_bank(seed=0, M=40, D=6):
    rng = np.random.default_rng(seed)
    words = "a dog man runs sits on the grass red ball".split()
    caps = [[" ".join(rng.choice(words, size=int(rng.integers(2, 7)))) for _ in range(int(rng.integers(1, 5)))]
            for _ in range(M)]
    return CaptionBank.build(rng.normal(size=(M, D)) + 3.0, caps), rng


def test_neighbours_equal_a_full_ranking():
    bank, rng = random_bank()
    q = rng.normal(size=(9, 6)) + 3.0
    got = bank.neighbours(q, 7)
    c = q - bank.mean
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    want = np.argsort(-(c @ bank.feats.T), axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(got, want)
    assert bank.neighbours(q, 100).shape == (9, 40)


def test_consensus_is_the_cider_of_the_pooled_references():
    bank, _ = random_bank(1)
    cap = "a dog runs on the grass"
    for j in range(5):  # one neighbour: exactly that bank image's CIDEr-D
        assert bank.consensus(cap, [j]) == pytest.approx(bank.reward.score(str(j), cap), abs=1e-12)
    n1, n2 = len(bank.captions[3]), len(bank.captions[8])
    pooled = (n1 * bank.reward.score("3", cap) + n2 * bank.reward.score("8", cap)) / (n1 + n2)
    assert bank.consensus(cap, [3, 8]) == pytest.approx(pooled, abs=1e-12)


def test_rerank_follows_the_neighbours_and_the_weight():
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    caps = [["a dog runs on the grass", "a brown dog runs"], ["a dog runs"], ["a man sits on a bench"],
            ["a man is sitting"]]
    bank = CaptionBank.build(feats, caps)
    cands = [[("a man sits on a bench", -1.0, 6), ("a dog runs on the grass", -9.0, 6)]] * 2
    q = np.array([[1.0, 0.05], [0.05, 1.0]])
    assert bank.rerank(q, cands, k=2) == [1, 0]
    assert bank.rerank(q, cands, k=2, weight=100.0) == [0, 0]  # the model's log-probability outweighs the vote


def test_bank_file_round_trip_and_bad_files(tmp_path):
    bank, rng = random_bank(2)
    path = bank.save(tmp_path / BANK_FILE)
    back = CaptionBank.load(path)
    assert back.captions == bank.captions
    np.testing.assert_allclose(back.feats, bank.feats, atol=2e-3)  # stored as float16
    q = rng.normal(size=(5, 6)) + 3.0
    np.testing.assert_array_equal(back.neighbours(q, 3), bank.neighbours(q, 3))
    (tmp_path / "junk.pt").write_bytes(b"not a bank")
    with pytest.raises(CheckpointError):
        CaptionBank.load(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="inputs of size"):
        bank.neighbours(np.zeros((1, 5)), 3)


def test_trained_generator_gets_a_bank_and_captions_follow_it(tmp_path):
    recs, store, _ = make_toy(tmp_path)
    ckpt = train_generator(small(epochs=3), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    model, vocab, cfg, _ = load_generator(ckpt)
    bank = bank_for(ckpt, cfg)
    train = [r for r in recs if r.split == "train"]
    assert bank is not None and len(bank.captions) == len(train)
    assert bank.captions[0] == [" ".join(s.tokens) for s in train[0].sentences]
    val = [r for r in recs if r.split == "val"]
    res, _ = caption_split(model, vocab, cfg, store, val, 3, 10, bank=bank, progress=False)
    plain, _ = caption_split(model, vocab, cfg, store, val, 3, 10, progress=False)
    feats = full_frame_features(store, [r.id for r in val], "image")  # the slow twin: every candidate scored here
    with torch.no_grad():
        hyps = beam_search(model, torch.from_numpy(feats), 3, 10, cfg.length_norm, cfg.min_len)
    for r, f, h in zip(val, feats, hyps):
        texts = [" ".join(vocab.decode(t)) for t, _ in h]
        nb = bank.neighbours(f[None], cfg.consensus_k)[0]
        scores = [bank.consensus(t, nb) for t in texts]
        assert res[r.id] == texts[int(np.argmax(scores))]
        assert plain[r.id] == texts[0]
    cfg.consensus_k = 0
    assert bank_for(ckpt, cfg) is None  # off: plain beam search


def test_a_bank_of_another_model_is_one_clear_error(tmp_path):
    bank, _ = random_bank(3)  # 6-d inputs
    bank.save(tmp_path / BANK_FILE)
    cfg = small()
    assert bank_for(tmp_path / "model.pt", cfg, 6) is not None
    with pytest.raises(CheckpointError, match="belongs to another model"):
        bank_for(tmp_path / "model.pt", cfg, 8)
    (tmp_path / BANK_FILE).write_bytes(b"corrupt")
    with pytest.raises(CheckpointError):
        bank_for(tmp_path / "model.pt", cfg, 6)
