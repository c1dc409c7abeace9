"""The aligner's vote in the caption re-ranking: against eq. 8 and the hub correction computed the slow way on a
store of whole frames; its place in the consensus choice; the run folders that have one and those that do not."""
import json
import shutil

import numpy as np
import pytest
import torch
from api_fakes import toy_run
from dvsa.align.hubness import correction
from dvsa.align.model import AlignConfig, AlignmentModel
from dvsa.align.retrieval import score_collection
from dvsa.data.features import FeatureStore
from dvsa.data.memstore import MemoryStore
from dvsa.data.text import Vocabulary
from dvsa.generate.align_vote import AlignVote
from dvsa.generate.consensus import CaptionBank, bank_for, pick
from dvsa.generate.model import GenConfig
from dvsa.generate.train import load_generator

torch.set_num_threads(1)
WORDS = "a dog man runs sits on the grass red ball bench".split()


def whole_frames(feats, size=(64, 48)):
    """A store of images whose only region is the whole frame (box [0, 0, W, H])."""
    store = MemoryStore(feats.shape[1])
    for n, f in enumerate(feats):
        store.add(str(n), np.array([[0, 0, *size]], np.float32), f[None], f, size)
    return store


@pytest.mark.parametrize("norm", ["none", "words"])
def test_vote_is_eq8_on_the_whole_frame_less_the_hub_correction(norm):
    rng = np.random.default_rng(0)
    vocab = Vocabulary.build([WORDS], min_count=1)
    cfg = AlignConfig(embed_dim=8, hidden_dim=6, word_dim=5, geometry=True, geometry_bins=4, score_norm=norm)
    model = AlignmentModel(cfg, len(vocab), 7).eval()
    bank_feats = rng.normal(size=(9, 7)).astype(np.float32)
    vote = AlignVote.from_store(model, vocab, whole_frames(bank_feats), [str(i) for i in range(9)], beta=1.5)
    feats = rng.normal(size=(3, 7)).astype(np.float32)
    texts = [[" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(c)] for c in (4, 1, 3)]
    got = vote.scores(feats, texts)
    images = whole_frames(feats)
    for b, ts in enumerate(texts):
        toks = [vocab.encode(t.split()) for t in ts]
        own = score_collection(model, images, [str(b)], toks, progress=False)[0].double()  # [C]
        bank = score_collection(model, whole_frames(bank_feats), [str(i) for i in range(9)], toks, progress=False)
        np.testing.assert_allclose(got[b], (own - correction(bank, 1.5, 0)).numpy(), rtol=1e-5, atol=1e-5)
    assert vote.scores(feats[:1], [["", "a dog"]])[0][0] == -np.inf  # no words: never chosen


def test_the_vote_joins_the_consensus_at_its_weight():
    feats = np.array([[1.0, 0.0], [0.0, 1.0]])
    bank = CaptionBank.build(feats, [["a dog runs"], ["a man sits"]])

    class Vote:  # says the second candidate fits the photo far better
        def scores(self, f, texts):
            return [np.array([0.0, 10.0]) for _ in texts]

    vocab = Vocabulary.build([WORDS], min_count=1)
    hyps = [[(vocab.encode("a dog runs".split()), -1.0), (vocab.encode("a man sits".split()), -2.0)]]
    cfg = GenConfig(consensus_k=1, align_vote=0.0)
    q = np.array([[1.0, 0.05]])
    assert pick(bank, vocab, q, hyps, cfg) == [0]  # the neighbour's caption, no vote
    bank.vote = Vote()
    assert pick(bank, vocab, q, hyps, cfg) == [0]  # weight 0: the vote is not asked
    cfg.align_vote = 1.0
    assert pick(bank, vocab, q, hyps, cfg) == [1]


def test_a_run_folder_with_a_retrieval_bank_gets_the_vote(tmp_path, tmp_path_factory, capsys):
    run = tmp_path / "run"
    shutil.copytree(toy_run(tmp_path_factory), run)
    ckpt = run / "gen_full" / "model.pt"
    model, vocab, cfg, _ = load_generator(ckpt)
    cfg.consensus_k, cfg.align_vote = 3, 0.3
    bank = bank_for(ckpt, cfg, model.input_dim)
    assert bank is not None and bank.vote is None  # the toy run has no retrieval bank: said once, no vote
    assert "without the aligner's vote" in capsys.readouterr().err
    ids = FeatureStore(run / "features").ids[:5]
    (run / "retrieval.done.json").write_text(json.dumps({"result": {"bank": {"beta": [1.5, 1.0], "ids": ids}}}))
    bank = bank_for(ckpt, cfg, model.input_dim)
    assert bank.vote is not None and tuple(bank.vote.bank.shape) == (5, bank.vote.model.cfg.embed_dim)
    cfg.align_vote = 0.0
    assert bank_for(ckpt, cfg, model.input_dim).vote is None  # off
