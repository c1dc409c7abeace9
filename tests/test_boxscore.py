"""The learned box score (align/boxscore.py): batched scores against a per-region twin, the prior added to the
word-region scores, and on scenes where the aligner alone prefers a part of each object, fitting the score on
the boxes moves the words onto the whole objects."""
import json

import numpy as np
import pytest
import torch
from dvsa.align.boxscore import (
    BoxPrior,
    BoxScoreConfig,
    BoxScorer,
    choose_box_weight,
    fit_box_scorer,
    load_box_scorer,
    save_box_scorer,
    tight_box_rate,
)
from dvsa.align.grounding import evaluate_alignment
from dvsa.align.model import box_geometry
from dvsa.align.snippets import SnippetConfig
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Phrase, Region, Sentence
from snippets_fakes import COLORS, SHAPES, FakeAligner, shape_words


def random_scorer(dim, bins, seed=0, whole_image=True):
    g = torch.Generator().manual_seed(seed)
    s = BoxScorer(dim, BoxScoreConfig(geometry_bins=bins, whole_image=whole_image))
    n = s.mean.numel()
    s.mean.copy_(torch.randn(n, generator=g))
    s.std.copy_(torch.rand(n, generator=g) + 0.5)
    s.linear.weight.copy_(torch.randn(1, n, generator=g))
    s.linear.bias.fill_(0.3)
    return s


@pytest.mark.parametrize("bins,whole_image", [(0, True), (4, True), (4, False)])
def test_batched_scores_match_a_per_region_twin(bins, whole_image):
    scorer = random_scorer(6, bins, whole_image=whole_image)
    g = torch.Generator().manual_seed(1)
    B, R = 3, 5
    feats = torch.randn(B, R, 6, generator=g)
    boxes = torch.zeros(B, R, 4)
    counts = [5, 2, 4]
    for b, n in enumerate(counts):
        boxes[b, 0] = torch.tensor([0.0, 0.0, 100.0 + 10 * b, 80.0])
        for r in range(1, n):
            x1, y1 = torch.rand(2, generator=g) * 50
            boxes[b, r] = torch.tensor([x1, y1, x1 + 10 + 20 * r, y1 + 15])
    got = scorer(feats, boxes)  # [B, R]
    w, c = scorer.linear.weight[0], scorer.linear.bias[0]
    for b, n in enumerate(counts):
        for r in range(R):
            if (r == 0 and not whole_image) or r >= n:
                want = 0.0  # padding rows, and the whole image unless it is scored
            else:
                geo = box_geometry(torch.stack([boxes[b, 0], boxes[b, r]])[None], bins)[0, 1]
                x = (torch.cat([feats[b, r], geo]) - scorer.mean) / scorer.std
                want = float(x @ w + c)
            assert float(got[b, r]) == pytest.approx(want, abs=1e-4), (b, r)


def test_box_prior_adds_the_weighted_score_on_real_words_only():
    scorer = random_scorer(4, 2)
    g = torch.Generator().manual_seed(2)
    model = FakeAligner(torch.randn(6, 4, generator=g))
    feats = torch.randn(2, 3, 4, generator=g)
    boxes = torch.tensor([[[0, 0, 50, 40], [5, 5, 20, 30], [10, 0, 45, 35]],
                          [[0, 0, 60, 60], [0, 0, 30, 30], [0, 0, 0, 0]]], dtype=torch.float32)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    tokens = torch.tensor([[1, 2, 3], [4, 0, 0]])
    lengths = torch.tensor([3, 1])
    base = model.word_region_scores(feats, mask, tokens, lengths, boxes)
    got = BoxPrior(model, scorer, 0.7).word_region_scores(feats, mask, tokens, lengths, boxes)
    s = scorer(feats, boxes)
    for b in range(2):
        for t in range(3):
            for r in range(3):
                if not mask[b, r] and t < lengths[b]:
                    assert got[b, t, r] == float("-inf")
                elif t >= lengths[b]:
                    assert got[b, t, r] == 0.0  # padded words stay 0, as the model's
                else:
                    assert float(got[b, t, r]) == pytest.approx(float(base[b, t, r] + 0.7 * s[b, r]), abs=1e-5)
    assert torch.equal(BoxPrior(model, scorer, 0.0).word_region_scores(feats, mask, tokens, lengths, boxes), base)
    with pytest.raises(ValueError):
        BoxPrior(model, scorer, -1.0)


def part_world(tmp_path, n_images=12, seed=0):
    """Scenes of two coloured shapes (differing in colour and shape), each with its tight box and a box on a
    quarter of it (IoU 0.25).

    The part box carries the same colour and shape features, a little stronger, so the aligner alone prefers it;
    one more feature (dim -2) is 1 on whole objects and 0 on parts: only a score learned from boxes can use it.
    """
    g = np.random.default_rng(seed)
    colors, shapes = COLORS, SHAPES
    vocab, table = shape_words(extra_dims=1)  # the extra feature: wholeness
    dim = table.shape[1]
    writer = FeatureStoreWriter(tmp_path / "store", {"dim": dim, "producer": "test"}, part_size=5)
    records, sid = [], 0
    for k in range(n_images):
        w, h = 100, 80
        c, s = int(g.integers(2)), int(g.integers(2))
        objs = [(colors[c], shapes[s]), (colors[1 - c], shapes[1 - s])]  # never alike: no ties to guess
        tight = [[5, 5, 45, 45], [55, 30, 95, 70]]
        parts = [[5, 5, 25, 25], [75, 50, 95, 70]]
        feats = np.zeros((5, dim))
        feats[0, -1] = 1.0
        for r, (c, s) in enumerate(objs):
            for row, strength, whole in ((1 + r, 1.0, 1.0), (3 + r, 1.1, 0.0)):
                feats[row, colors.index(c)] = strength
                feats[row, len(colors) + shapes.index(s)] = strength
                feats[row, -2] = whole
        feats[1:] += 0.01 * g.normal(size=(4, dim))
        split = "train" if k < n_images // 2 else "val"
        writer.add(f"p{k}", np.array([[0, 0, w, h]] + tight + parts), feats, feats[0], (w, h))
        toks = ["a", objs[0][0], objs[0][1], "left", "of", "the", objs[1][0], objs[1][1]]
        sent = Sentence(sid, " ".join(toks), toks)
        regions = [Region(list(map(float, tight[r])), f"{c} {s}", s, str(r)) for r, (c, s) in enumerate(objs)]
        phrases = [Phrase(sid, 0, 3, " ".join(toks[0:3]), ["0"]), Phrase(sid, 5, 8, " ".join(toks[5:8]), ["1"])]
        records.append(ImageRecord(f"p{k}", f"p{k}.png", w, h, split, [sent], regions, phrases))
        sid += 1
    writer.close()
    return records, FeatureStore(tmp_path / "store"), FakeAligner(table), vocab


@pytest.mark.parametrize("whole_image", [True, False])
def test_the_fitted_score_moves_words_from_parts_onto_whole_objects(tmp_path, whole_image):
    records, store, model, vocab = part_world(tmp_path)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    scorer, stats = fit_box_scorer(store, train, BoxScoreConfig(whole_image=whole_image))
    rows = 5 if whole_image else 4  # the whole image is a region (never an object here) when it is scored
    assert stats["n_images"] == len(train) and stats["n_regions"] == rows * len(train)
    assert stats["positive_rate"] == pytest.approx(2 / rows) and stats["train_accuracy"] == 1.0
    assert tight_box_rate(scorer, store, val) == 1.0

    alone = evaluate_alignment(model, vocab, store, val, beta=0.5)
    assert alone["word_accuracy"] == 0.0  # every content word on a part
    prior = evaluate_alignment(BoxPrior(model, scorer, 1.0), vocab, store, val, beta=0.5)
    assert prior["word_accuracy"] == 1.0 and prior["phrase_accuracy"] == 1.0

    weight, rows = choose_box_weight(model, scorer, vocab, store, train, val, (0.5, 1.0),
                                     SnippetConfig(target_len=2.0, calib_sentences=50))
    assert [r["weight"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["word_accuracy"] == 0.0 and weight > 0
    assert max(r["word_accuracy"] for r in rows) == 1.0


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    scorer = random_scorer(5, 3)
    save_box_scorer(tmp_path / "bs.pt", scorer, {"train_accuracy": 0.9})
    raw = torch.load(tmp_path / "bs.pt", weights_only=True)
    assert raw["kind"] == "boxscore" and raw["config"]["geometry_bins"] == 3 and raw["stats"]["train_accuracy"] == 0.9
    back = load_box_scorer(tmp_path / "bs.pt")
    feats, boxes = torch.randn(2, 3, 5), torch.tensor([[[0, 0, 40, 40], [1, 2, 20, 30], [5, 5, 9, 9]]] * 2,
                                                       dtype=torch.float32)
    assert torch.allclose(back(feats, boxes), scorer(feats, boxes))
    with pytest.raises(ValueError, match="boxscore"):
        from dvsa.data.checkpoint import load_checkpoint

        load_checkpoint(tmp_path / "bs.pt", kind="align")


def test_a_box_score_saved_before_whole_image_scoring_still_leaves_the_whole_image_out(tmp_path):
    scorer = random_scorer(5, 3, whole_image=False)
    save_box_scorer(tmp_path / "old.pt", scorer)
    raw = torch.load(tmp_path / "old.pt", weights_only=True)
    del raw["config"]["whole_image"]
    torch.save(raw, tmp_path / "old.pt")
    back = load_box_scorer(tmp_path / "old.pt")
    assert back.cfg.whole_image is False
    feats, boxes = torch.randn(1, 2, 5), torch.tensor([[[0, 0, 40, 40], [1, 2, 20, 30]]], dtype=torch.float32)
    got = back(feats, boxes)
    assert got[0, 0] == 0.0 and torch.allclose(got, scorer(feats, boxes))
    assert random_scorer(5, 3)(feats, boxes)[0, 0] != 0.0  # scored when whole_image is on


def test_config_and_empty_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError):
        BoxScoreConfig(iou=0.0)
    records, store, _, _ = part_world(tmp_path, n_images=2)
    bare = [ImageRecord(r.id, r.path, r.width, r.height, r.split, r.sentences) for r in records]  # no boxes
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_box_scorer(store, bare, BoxScoreConfig())


def test_cli_fits_and_evaluate_uses_it(tmp_path, monkeypatch, capsys):
    import dvsa.data.catalog
    import dvsa.scripts.align_boxscore as fit_cli
    import dvsa.scripts.align_evaluate as eval_cli
    import dvsa.align.loading as common

    records, store, model, vocab = part_world(tmp_path)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    monkeypatch.setattr(common, "load_model", lambda path, device="cpu": (model, vocab, None))
    data_args = ["--store", str(tmp_path / "store"), "--dataset", "synthetic", "--root", "r"]
    assert fit_cli.main(data_args + ["--out", str(tmp_path / "bs.pt")]) == 0
    assert '"tight_box_rate_val": 1.0' in capsys.readouterr().out
    base = ["--checkpoint", "m.pt", "--split", "val", "--beta", "0.5"] + data_args
    assert eval_cli.main(base + ["--out", str(tmp_path / "a.json")]) == 0
    assert eval_cli.main(base + ["--box-scorer", str(tmp_path / "bs.pt"), "--box-weight", "1",
                                 "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b"))
    assert a["word_accuracy"] == 0.0 and a["box_scorer"] is None
    assert b["word_accuracy"] == 1.0 and b["box_weight"] == 1.0
    assert "box score" in capsys.readouterr().out
