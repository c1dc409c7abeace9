"""Alignment evaluation (align/grounding.py): against a slow twin on random data, on scenes with known answers,
and on a tiny Flickr30k Entities fixture in the real file format."""
from collections import Counter

import numpy as np
import pytest
import torch
from dvsa.align.grounding import (
    STOPWORDS,
    AlignmentEvaluator,
    evaluate_alignment,
    format_table,
)
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Phrase, Region, Sentence
from dvsa.data.text import Vocabulary
from snippets_fakes import FakeAligner, grounded_world, random_world
from test_mrf import brute_force
from torchvision.ops import box_iou


def iou_slow(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_iou_matches_slow():
    g = np.random.default_rng(0)
    a = np.sort(g.uniform(0, 50, (7, 2, 2)), axis=1).transpose(0, 2, 1).reshape(7, 4)[:, [0, 2, 1, 3]]
    b = np.sort(g.uniform(0, 50, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    got = box_iou(torch.tensor(a), torch.tensor(b))
    for i in range(7):
        for j in range(5):
            assert float(got[i, j]) == pytest.approx(iou_slow(a[i], b[j]), abs=1e-9)
    assert float(box_iou(torch.tensor([[0, 0, 10, 10.0]]), torch.tensor([[0, 0, 10, 10.0]]))) == 1.0


def add_random_phrases(records, store, seed):
    """Random phrases over the random world; region ids point at store boxes (some jittered, some missing)."""
    g = np.random.default_rng(seed)
    for r in records:
        boxes, _ = store.regions(r.id)
        regs = []
        for k, b in enumerate(boxes):
            jit = g.uniform(-6, 6, 4) if g.random() < 0.5 else np.zeros(4)
            bb = [float(b[0] + jit[0]), float(b[1] + jit[1]), float(b[2] + abs(jit[2]) + 1), float(b[3] + abs(jit[3]) + 1)]
            regs.append(Region(bb, None, "kind%d" % (k % 2), f"e{g.integers(0, 3)}"))
        r.regions = regs
        r.phrases = []
        for s in r.sentences:
            n = len(s.tokens)
            for _ in range(2):
                if n == 0:
                    break
                st = int(g.integers(0, n))
                en = int(g.integers(st + 1, n + 1))
                r.phrases.append(Phrase(s.id, st, en, " ".join(s.tokens[st:en]), [f"e{g.integers(0, 4)}"]))  # e3: no box


GROUPS = {"colours": ["red", "blue"], "shapes": ["circle", "square"]}


def slow_evaluate(model, vocab, store, records, beta, iou=0.5, by_group=None):
    words = right_w = phrases = right_p = nobox = 0
    group_of = {w: g for g, ws in GROUPS.items() for w in ws}
    for r in records:
        boxes, feats = store.regions(r.id)
        for s in r.sentences:
            ids = vocab.encode(s.tokens)
            if not ids:
                u, a = None, []
            else:
                u = model.word_region_scores(torch.tensor(feats)[None], torch.ones(1, len(boxes), dtype=torch.bool),
                                             torch.tensor([ids]), torch.tensor([len(ids)]))[0].double()
                a, _ = brute_force(u, len(ids), list(range(len(boxes))), beta)
            for p in r.phrases:
                if p.sentence_id != s.id:
                    continue
                gt = [g.box for g in r.regions if g.id in p.region_ids]
                if not gt:
                    nobox += 1
                    continue
                good = [max(iou_slow(boxes[i], b) for b in gt) >= iou for i in range(len(boxes))]
                span = list(range(p.start, p.end))
                content = [t for t in span if s.tokens[t] not in STOPWORDS]
                for t in content:
                    words += 1
                    right_w += good[a[t]]
                    if by_group is not None and s.tokens[t] in group_of:
                        by_group.setdefault(group_of[s.tokens[t]], []).append(good[a[t]])
                voters = content or span
                c = Counter(a[t] for t in voters)
                top = max(c.values())
                tied = sorted(i for i in c if c[i] == top)
                best = max(tied, key=lambda i: (sum(float(u[t, i]) for t in voters), -i))
                phrases += 1
                right_p += good[best]
    return right_w / words, right_p / phrases, nobox


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
def test_evaluator_matches_slow_twin(tmp_path, beta):
    records, store, model, vocab = random_world(tmp_path, n_images=5, seed=11, max_regions=4)
    for r in records:  # keep brute force small
        for s in r.sentences:
            s.tokens = s.tokens[:5]
    add_random_phrases(records, store, seed=12)
    res = evaluate_alignment(model, vocab, store, records, beta, batch_size=4, sweep=(1.0,), groups=GROUPS)
    by_group = {}
    w, p, nobox = slow_evaluate(model, vocab, store, records, beta, by_group=by_group)
    assert set(by_group) == set(GROUPS)
    assert res["word_accuracy_by_group"] == pytest.approx({g: np.mean(v) for g, v in by_group.items()})
    assert res["n_words_by_group"] == {g: len(v) for g, v in by_group.items()}
    w1, p1, _ = slow_evaluate(model, vocab, store, records, 1.0)
    assert res["sweep"][0]["beta"] == 1.0
    assert res["sweep"][0]["word_accuracy"] == pytest.approx(w1) and res["sweep"][0]["phrase_accuracy"] == pytest.approx(p1)
    assert res["word_accuracy"] == pytest.approx(w)
    assert res["phrase_accuracy"] == pytest.approx(p)
    assert res["n_phrases_no_box"] == nobox
    w0, p0, _ = slow_evaluate(model, vocab, store, records, 0.0)
    assert res["word_accuracy_argmax"] == pytest.approx(w0)
    assert res["phrase_accuracy_argmax"] == pytest.approx(p0)
    assert 0 <= res["phrase_accuracy"] <= res["phrase_upper_bound"] <= 1


def test_known_scenes_mrf_beats_argmax(tmp_path):
    records, store, model, vocab = grounded_world(tmp_path, n_images=6, seed=0)
    res = evaluate_alignment(model, vocab, store, records, beta=0.5)
    # with beta 0.5 "red circle" stays on the red circle even when the other object is red too
    assert res["word_accuracy"] == 1.0 and res["phrase_accuracy"] == 1.0
    # the argmax sends a word shared by both objects to the lower row: expected accuracy, counted by hand
    shared = sum(len({r.label for r in rec.regions}) == 1 or len({r.text.split()[0] for r in rec.regions}) == 1
                 for rec in records)
    assert shared > 0
    expected = 1 - shared / (4 * len(records))  # one of 4 content words per shared scene goes to object 0 wrongly
    assert res["word_accuracy_argmax"] == pytest.approx(expected)
    assert res["n_words"] == 4 * len(records) and res["n_phrases"] == 2 * len(records)
    assert res["mean_snippet_len"] > res["mean_snippet_len_argmax"]
    assert "MRF" in format_table(res)


def test_evaluator_reset_and_empty():
    ev = AlignmentEvaluator()
    with pytest.raises(ValueError, match="no phrase"):
        ev.evaluate()
    with pytest.raises(ValueError, match="ground-truth box"):
        evaluate_alignment(None, None, None, [ImageRecord("x", "x.png", sentences=[Sentence(0, "a", ["a"])])], 0.0)


def write_entities_fixture(root):
    """Two images in the Flickr30k Entities format; sizes 100 x 80."""
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "images").mkdir()
    from PIL import Image

    for i in ("1", "2"):
        Image.new("RGB", (100, 80)).save(root / "images" / f"{i}.jpg")
    (root / "Sentences" / "1.txt").write_text(
        "[/EN#10/people A man] holds [/EN#11/animals two dogs] in [/EN#0/notvisual the wind] .\n")
    (root / "Sentences" / "2.txt").write_text("[/EN#20/people The man] stands .\n")
    obj = "<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
    ann = lambda objs: ("<annotation><size><width>100</width><height>80</height><depth>3</depth></size>"
                        + "".join(obj.format(n=n, a=a, b=b, c=c, d=d) for n, (a, b, c, d) in objs) + "</annotation>")
    # entity 11 (two dogs) has two boxes; the store's region 2 matches only the second of them
    (root / "Annotations" / "1.xml").write_text(ann([("10", (1, 1, 40, 80)), ("11", (51, 1, 70, 30)),
                                                     ("11", (71, 41, 100, 80))]))
    (root / "Annotations" / "2.xml").write_text(ann([("20", (61, 1, 100, 80))]))
    for s in ("train", "val"):
        (root / f"{s}.txt").write_text("")
    (root / "test.txt").write_text("1\n2\n")


def test_flickr30k_entities_fixture(tmp_path):
    from dvsa.data.catalog import load_dataset

    root = tmp_path / "f30k"
    write_entities_fixture(root)
    records = load_dataset("flickr30k_entities", str(root), images_dir=str(root / "images"))
    assert [r.id for r in records] == ["1", "2"]
    vocab = Vocabulary(["a", "man", "holds", "two", "dogs", "in", "the", "wind", "stands"])
    table = torch.zeros(len(vocab), 3)
    table[vocab.stoi["man"], 1] = 1.0
    table[vocab.stoi["dogs"], 2] = 1.0
    table[vocab.stoi["two"], 2] = 0.5
    writer = FeatureStoreWriter(tmp_path / "store", {"dim": 3}, part_size=8)
    # image 1: region 1 = the man, region 2 = the second dog box; image 2: region 1 is the man's box shifted so
    # that its IoU is below 0.5 (wrong on purpose)
    writer.add("1", np.array([[0, 0, 100, 80], [0, 0, 40, 80], [70, 40, 100, 80]]),
               np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1.0]]), np.zeros(3), (100, 80))
    writer.add("2", np.array([[0, 0, 100, 80], [20, 0, 60, 80]]), np.array([[0, 0, 0], [0, 1, 0.0]]), np.zeros(3), (100, 80))
    writer.close()
    store = FeatureStore(tmp_path / "store")
    res = evaluate_alignment(FakeAligner(table), vocab, store, records, beta=0.3)
    # phrases with a box: "a man" (right), "two dogs" (right: IoU 1 with its second box), "the man" (wrong)
    assert res["n_phrases"] == 3 and res["n_phrases_no_box"] == 1
    assert res["phrase_accuracy"] == pytest.approx(2 / 3)
    assert res["word_accuracy"] == pytest.approx(3 / 4)  # man, two, dogs right; man of image 2 wrong
    assert res["phrase_accuracy_by_label"] == {"animals": 1.0, "people": 0.5}
    assert res["phrase_upper_bound"] == pytest.approx(2 / 3)


def test_cli_evaluate(tmp_path, monkeypatch, capsys):
    import json

    import dvsa.align.loading as common
    import dvsa.data.catalog
    import dvsa.scripts.align_evaluate as cli

    records, store, model, vocab = grounded_world(tmp_path, n_images=4, seed=1)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    monkeypatch.setattr(common, "load_model", lambda path, device="cpu": (model, vocab, None))
    base = ["--checkpoint", "m.pt", "--store", str(tmp_path / "store"), "--dataset", "synthetic", "--root", "r"]
    assert cli.main(base + ["--beta", "0.5", "--sweep", "0.1,2", "--out", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["word_accuracy"] == 1.0 and res["beta"] == 0.5 and res["split"] == "test"
    assert [r["beta"] for r in res["sweep"]] == [0.1, 2.0]
    assert "per-word argmax" in capsys.readouterr().out
    (tmp_path / "s.json").write_text(json.dumps({"beta": 0.25}))
    assert cli.main(base + ["--beta-from", str(tmp_path / "s.json")]) == 0
    assert cli.main(base + ["--target-len", "2"]) == 0  # no train split: calibrated on the test split
    assert "calibrated on test" in capsys.readouterr().out
