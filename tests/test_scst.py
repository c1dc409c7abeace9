"""Self-critical training: the CIDEr-D reward against pycocoevalcap, the policy's log-probabilities against the
model stepped word by word, the baseline, the effect on the toy captions, and resuming inside the phase."""
import json

import numpy as np
import pytest
import torch
from dvsa.data.text import END_ID, PAD_ID, START_ID
from dvsa.generate.cider_reward import CiderReward
from dvsa.generate.model import CaptionModel, GenConfig
from dvsa.generate.scst import (
    _mask,
    leave_one_out,
    sample_policy,
    scst_loss,
    sequence_logprobs,
    teacher_inputs,
)
from dvsa.generate.train import load_generator, train_generator
from pycocoevalcap.cider.cider import Cider
from test_generate_train import make_toy, small

torch.set_num_threads(1)
WORDS = "a the dog dogs man runs running on grass field red ball white black".split()


def random_sentence(rng, lo=1, hi=9):
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))))


def test_reward_equals_pycocoevalcap_on_its_own_corpus():
    rng = np.random.default_rng(0)
    refs = {str(i): [random_sentence(rng) for _ in range(int(rng.integers(1, 6)))] for i in range(40)}
    hyps = {k: [random_sentence(rng, 1, 12)] for k in refs}
    hyps["3"] = ["zebra zebra unseen words"]  # n-grams absent from the corpus
    hyps["4"] = [refs["4"][0]]  # a reference itself
    _, expected = Cider().compute_score(refs, hyps)
    got = CiderReward(refs).scores(list(refs), [hyps[k][0] for k in refs])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert got[4] > np.median(got)


def test_reward_uses_the_corpus_document_frequencies():
    """Scoring a subset keeps the whole corpus' idf: a caption's reward does not depend on its batch."""
    rng = np.random.default_rng(1)
    refs = {str(i): [random_sentence(rng) for _ in range(5)] for i in range(30)}
    reward = CiderReward(refs)
    caps = [random_sentence(rng) for _ in range(30)]
    full = reward.scores(list(refs), caps)
    part = reward.scores(list(refs)[:3], caps[:3])
    np.testing.assert_array_equal(part, full[:3])
    with pytest.raises(KeyError, match="no references"):
        reward.score("missing", "a dog")


def test_leave_one_out_baseline():
    r = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    np.testing.assert_allclose(leave_one_out(r), [[1 - 2.5, 2 - 2.0, 3 - 1.5], [0 - 3.0, 0 - 3.0, 6.0]])
    with pytest.raises(ValueError):
        leave_one_out(np.ones((2, 1)))


def _model(seed=0, V=12, D=6):
    torch.manual_seed(seed)
    return CaptionModel(GenConfig(hidden=16, embed=8, dropout=0.0), V, D).eval()


def test_sequence_logprobs_equal_the_model_stepped_word_by_word():
    model = _model()
    feats = torch.randn(7, 6)
    seqs = sample_policy(model, feats, 6, torch.Generator().manual_seed(0))
    assert all(s and PAD_ID not in s and START_ID not in s for s in seqs)
    assert all(s[-1] == END_ID or len(s) == 6 for s in seqs)
    assert all(END_ID not in s[:-1] for s in seqs)
    inp, tgt = teacher_inputs(seqs)
    got = sequence_logprobs(model, feats, inp, tgt)
    adv = torch.randn(7)
    loss = scst_loss(got, adv, sum(len(s) for s in seqs))
    with torch.no_grad():  # the slow twin: one image at a time, one word at a time
        want = []
        for b, seq in enumerate(seqs):
            state, prev, total = model.init_state(feats[b : b + 1]), torch.tensor([START_ID]), 0.0
            for w in seq:
                logp, state = model.step(prev, state)
                total += float(_mask(logp)[0, w])
                prev = torch.tensor([w])
            want.append(total)
    torch.testing.assert_close(got.detach(), torch.tensor(want), rtol=1e-5, atol=1e-5)
    want_loss = -sum(a * w for a, w in zip(adv.tolist(), want)) / sum(len(s) for s in seqs)
    assert abs(float(loss.detach()) - want_loss) < 1e-5
    loss.backward()  # differentiable through the teacher-forced pass
    assert model.out.weight.grad is not None and model.out.weight.grad.abs().sum() > 0


def test_samples_follow_the_policy():
    """The first sampled word's frequencies over many draws match the masked softmax."""
    model = _model(1)
    feats = torch.randn(1, 6).expand(4000, 6)
    seqs = sample_policy(model, feats, 1, torch.Generator().manual_seed(3))
    counts = np.bincount([s[0] for s in seqs], minlength=12) / len(seqs)
    with torch.no_grad():
        logp, _ = model.step(torch.tensor([START_ID]), model.init_state(feats[:1]))
        probs = _mask(logp)[0].exp().numpy()
    assert probs[PAD_ID] == 0 and probs[START_ID] == 0
    assert np.abs(counts - probs).max() < 0.04  # about 5 standard errors at p = 1/10 with 4,000 draws


def _xe_then_scst(tmp, recs, store, **kw):
    cfg = small(epochs=2, lr=0.003, val_images=12, **kw)
    return train_generator(cfg, store, recs, tmp, progress=False, log=lambda *a: None)


def test_self_critical_phase_raises_the_reward(tmp_path):
    recs, store, _ = make_toy(tmp_path)
    _xe_then_scst(tmp_path / "run", recs, store, scst_epochs=8, scst_lr=1e-3, scst_images=8)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    xe = [h for h in hist if h.get("phase") != "scst"]
    sc = [h for h in hist if h.get("phase") == "scst"]
    assert len(xe) == 2 and len(sc) == 8
    # the sampled captions' CIDEr-D rose from 2.4-3.2 to 8.0-8.9 over toy seeds 0-3; greedy captions stay right
    assert sc[-1]["reward"] > sc[0]["reward"] + 3.0, [h["reward"] for h in sc]
    assert sc[-1]["val_cider"] >= xe[-1]["val_cider"] - 1.0, (xe, sc)
    _, _, _, ck = load_generator(tmp_path / "run" / "model.pt")
    assert ck["scst_from"] == 2 and ck["epoch"] > 2


def test_self_critical_phase_resumes_exactly(tmp_path):
    recs, store, _ = make_toy(tmp_path)
    kw = dict(scst_lr=1e-3, scst_images=8)
    _xe_then_scst(tmp_path / "once", recs, store, scst_epochs=3, **kw)
    _xe_then_scst(tmp_path / "twice", recs, store, scst_epochs=1, **kw)
    _xe_then_scst(tmp_path / "twice", recs, store, scst_epochs=3, **kw)  # resumes after the first SCST epoch
    a = torch.load(tmp_path / "once" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "twice" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 5 and a["scst_from"] == b["scst_from"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)


def test_self_critical_needs_the_full_frame_rnn():
    with pytest.raises(ValueError, match="scst_epochs needs"):
        GenConfig(arch="attention", input="regions", scst_epochs=1).validate()
    with pytest.raises(ValueError, match="scst_samples"):
        GenConfig(scst_epochs=1, scst_samples=1).validate()
