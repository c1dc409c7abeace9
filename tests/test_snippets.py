"""Snippet writing and beta calibration (align/snippets.py) with a fake aligner and a tiny store."""
import json

import pytest
import torch
from dvsa.align.mrf import chain_mrf
from dvsa.align.snippets import (
    SnippetConfig,
    calibrate_beta,
    calibration_batches,
    mean_snippet_length,
    read_snippets,
    score_pairs,
    sentence_pairs,
    stack_batches,
    write_snippets,
)
from dvsa.data.records import DataError
from snippets_fakes import random_world


def slow_snippets(model, vocab, store, records, beta):
    """One pair at a time, no batching: the twin of write_snippets."""
    out = []
    for r in records:
        boxes, feats = store.regions(r.id)
        for s in r.sentences:
            ids = vocab.encode(s.tokens)
            if not ids:
                continue
            u = model.word_region_scores(torch.tensor(feats)[None], torch.ones(1, len(boxes), dtype=torch.bool),
                                         torch.tensor([ids]), torch.tensor([len(ids)]))[0]
            a = chain_mrf(u[None], torch.tensor([len(ids)]), None, beta).assign[0].tolist()
            start = 0
            for j in range(1, len(a) + 1):
                if j == len(a) or a[j] != a[start]:
                    out.append((r.id, s.id, start, j, " ".join(s.tokens[start:j]), a[start],
                                [float(x) for x in boxes[a[start]]], float(u[start:j, a[start]].sum())))
                    start = j
    return out


@pytest.mark.parametrize("beta", [0.0, 0.7, 100.0])
def test_write_snippets_matches_slow_twin(tmp_path, beta):
    records, store, model, vocab = random_world(tmp_path)
    summary = write_snippets(model, vocab, store, records, tmp_path / "s.jsonl",
                             SnippetConfig(beta=beta, batch_size=4))
    got = read_snippets(tmp_path / "s.jsonl")
    want = slow_snippets(model, vocab, store, records, beta)
    assert len(got) == len(want) == summary["n_snippets"]
    for d, w in zip(got, want):
        assert (d["image_id"], d["sentence_id"], d["start"], d["end"], d["text"], d["region"]) == w[:6]
        assert d["box"] == pytest.approx(w[6], abs=0.01)
        assert d["score"] == pytest.approx(w[7], abs=1e-4)
    # snippets tile every non-empty sentence exactly
    n_words = sum(len(s.tokens) for r in records for s in r.sentences)
    assert sum(d["end"] - d["start"] for d in got) == n_words == summary["n_words"]
    assert summary["mean_snippet_len"] == pytest.approx(n_words / len(got))
    hist = {}
    for d in got:
        hist[str(d["end"] - d["start"])] = hist.get(str(d["end"] - d["start"]), 0) + 1
    assert summary["length_hist"] == hist
    assert summary["whole_image_fraction"] == pytest.approx(sum(d["region"] == 0 for d in got) / len(got))
    if beta == 100.0:  # one snippet per non-empty sentence
        assert len(got) == sum(1 for r in records for s in r.sentences if s.tokens)


def test_calibration_reaches_target_and_is_monotone(tmp_path):
    records, store, model, vocab = random_world(tmp_path, n_images=10, seed=1)
    cfg = SnippetConfig(batch_size=8, calib_sentences=1000)
    batches = calibration_batches(model, vocab, store, records, cfg)
    stacked = stack_batches(batches)
    lengths = [mean_snippet_length(stacked, b) for b in (0.0, 0.3, 1.0, 3.0)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    beta, got = calibrate_beta(batches, 2.0)
    assert beta > 0
    assert got == pytest.approx(mean_snippet_length(stacked, beta))
    # the length is a step function of beta: just below the returned beta it is shorter, or we are at a step
    below = mean_snippet_length(stacked, beta * 0.999)
    assert below <= got
    assert abs(got - 2.0) <= abs(below - 2.0) + 1e-9 or got >= 2.0
    # a target no beta can exceed gives one snippet per sentence
    beta_max, longest = calibrate_beta(batches, 1e6)
    words = sum(int(b.lengths.sum()) for b in batches)
    sents = sum(int((b.lengths > 0).sum()) for b in batches)
    assert longest == pytest.approx(words / sents)
    # target already met at beta = 0
    assert calibrate_beta(batches, 1.0)[0] == 0.0


def test_write_snippets_calibrates_and_reports_missing(tmp_path):
    records, store, model, vocab = random_world(tmp_path, n_images=4, seed=2)
    from dvsa.data.records import ImageRecord, Sentence

    records.append(ImageRecord("gone", "gone.png", 10, 10, "train", [Sentence(999, "a", ["a"])]))
    summary = write_snippets(model, vocab, store, records, tmp_path / "out" / "s.jsonl",
                             SnippetConfig(target_len=1.8, batch_size=3))
    assert summary["missing_images"] == ["gone"]
    assert summary["beta"] >= 0 and summary["target_len"] == 1.8
    assert summary["calib_len"] == pytest.approx(summary["mean_snippet_len"])  # sample = everything here
    assert not (tmp_path / "out" / "s.jsonl.tmp").exists()


def test_score_pairs_batches_agree(tmp_path):
    records, store, model, vocab = random_world(tmp_path, seed=3)
    pairs = sentence_pairs(records, store)
    one = list(score_pairs(model, vocab, store, pairs, batch_size=1))
    many = list(score_pairs(model, vocab, store, pairs, batch_size=7))
    k = 0
    for b in many:
        for j in range(len(b.records)):
            n, r = int(b.lengths[j]), int(b.region_mask[j].sum())
            assert torch.allclose(b.unary[j, :n, :r], one[k].unary[0, :n, :r])
            k += 1
    assert k == len(pairs)


def test_read_snippets_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"image_id": "a"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_snippets(p)
    p.write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_snippets(p)


def test_config_validation():
    with pytest.raises(ValueError):
        SnippetConfig(score="max")
    with pytest.raises(ValueError):
        SnippetConfig(beta=-1.0)


def test_cli_writes_snippets_and_summary(tmp_path, monkeypatch):
    import dvsa.data.catalog
    import dvsa.align.loading
    import dvsa.scripts.align_snippets as cli

    records, store, model, vocab = random_world(tmp_path, seed=4)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    monkeypatch.setattr(dvsa.align.loading, "load_model", lambda path, device="cpu": (model, vocab, None))
    out = tmp_path / "run" / "snippets.jsonl"
    rc = cli.main(["--checkpoint", "x.pt", "--store", str(tmp_path / "store"), "--dataset", "fake", "--root", "r",
                   "--split", "train", "--target-len", "1.5", "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((tmp_path / "run" / "snippets.summary.json").read_text())
    assert summary["config"]["target_len"] == 1.5 and summary["beta"] >= 0
    assert len(read_snippets(out)) == summary["n_snippets"] > 0
    rc = cli.main(["--checkpoint", "x.pt", "--store", str(tmp_path / "store"), "--dataset", "fake", "--root", "r",
                   "--beta", "0", "--out", str(out), "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "snippets.summary.json").read_text())["beta"] == 0.0
