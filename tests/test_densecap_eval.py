"""Dense captioning mAP (DenseCap's protocol) against a slow, loop-by-loop twin, plus hand-made cases."""
import numpy as np
import pytest
from dvsa.generate import densecap_eval as dc
from dvsa.generate.densecap_eval import (
    DenseCapEvaluator,
    exact_match_scorer,
    meteor_exact,
)

WORDS = ["dog", "cat", "red", "ball", "man", "tree"]


# ------------------------------------------------------------------------------------------------ slow twin
def slow_iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def slow_merge(boxes, thr):
    n = len(boxes)
    alive = [True] * n
    groups = []
    while True:
        best, best_count = None, 0
        for i in range(n):
            if not alive[i]:
                continue
            count = sum(1 for j in range(n) if alive[j] and (i == j or slow_iou(boxes[i], boxes[j]) >= thr))
            if count > best_count:
                best, best_count = i, count
        if best is None:
            return groups
        g = [j for j in range(n) if alive[j] and (j == best or slow_iou(boxes[best], boxes[j]) >= thr)]
        for j in g:
            alive[j] = False
        groups.append(g)


def lua_levels():
    """The recall levels DenseCap's `for t=0,1,0.01 do` visits (Lua's numeric for: t += 0.01 while t <= 1)."""
    out, t = [], 0.0
    while t <= 1:
        out.append(t)
        t += 0.01
    return out


def port_levels():
    """Scenic's port (densevoc_evaluator.DensecapEval): `for t in range(100): mask = rec >= t / 100.`"""
    return [t / 100.0 for t in range(100)]


def slow_map(images, scorer, ious=dc.IOU_THRESHOLDS, mets=dc.METEOR_THRESHOLDS, levels=None):
    levels = port_levels() if levels is None else levels
    records, npos = [], 0
    for gtb, gtc, pb, ps, pc in images:
        groups = slow_merge(gtb, 0.7)
        merged = [[sum(gtb[i][k] for i in g) / len(g) for k in range(4)] for g in groups]
        refs = [[gtc[i] for i in g] for g in groups]
        used = [False] * len(merged)
        for i in sorted(range(len(ps)), key=lambda i: -ps[i]):
            ovmax, jmax = 0.0, -1
            for j, m in enumerate(merged):
                ov = slow_iou(pb[i], m)
                if ov > ovmax:
                    ovmax, jmax = ov, j
            if jmax < 0:
                records.append((ps[i], False, 0.0, None))
                continue
            ok = not used[jmax]
            used[jmax] = True
            score = scorer([pc[i]], [refs[jmax]])[0]
            records.append((ps[i], ok, ovmax, score))
        npos += len(merged)
    records.sort(key=lambda r: -r[0])
    aps = []
    for t in ious:
        for m in mets:
            tp = [r[1] and r[2] >= t and r[3] is not None and r[3] > m for r in records]
            prec, rec, c = [], [], 0
            for k, x in enumerate(tp):
                c += x
                prec.append(c / (k + 1))
                rec.append(c / npos)
            # eval_utils.lua and the ports: ap = sum of max(prec * (rec >= t)) over the levels, / their number
            aps.append(sum(max([p for p, r in zip(prec, rec) if r >= lv], default=0.0) for lv in levels)
                       / len(levels))
    return sum(aps) / len(aps), aps


def overlap_scorer(cands, refs):
    """Graded stub: best word-set Jaccard overlap with a reference (exercises the METEOR thresholds)."""
    out = []
    for c, rs in zip(cands, refs):
        cs = set(c.split())
        out.append(max(len(cs & set(r.split())) / len(cs | set(r.split())) for r in rs))
    return out


def random_image(rng):
    g = int(rng.integers(1, 6))
    boxes = []
    for _ in range(g):
        x, y = rng.uniform(0, 80, 2)
        w, h = rng.uniform(5, 40, 2)
        boxes.append([x, y, x + w, y + h])
        if rng.random() < 0.4:  # a near-duplicate, to be merged (or not) with the box
            boxes.append([v + rng.uniform(-2, 2) for v in boxes[-1]])
    caps = [" ".join(rng.choice(WORDS, 2)) for _ in boxes]
    p = int(rng.integers(0, 8))
    pb, pc = [], []
    for _ in range(p):
        if boxes and rng.random() < 0.7:  # jittered copy of a GT box
            b = boxes[int(rng.integers(len(boxes)))]
            pb.append([v + rng.uniform(-6, 6) for v in b])
            pb[-1][2] = max(pb[-1][2], pb[-1][0] + 1)
            pb[-1][3] = max(pb[-1][3], pb[-1][1] + 1)
        else:
            x, y = rng.uniform(0, 100, 2)
            pb.append([x, y, x + rng.uniform(3, 30), y + rng.uniform(3, 30)])
        pc.append(caps[int(rng.integers(len(caps)))] if rng.random() < 0.6 else " ".join(rng.choice(WORDS, 2)))
    ps = rng.random(p).tolist()
    return boxes, caps, pb, ps, pc


@pytest.mark.parametrize("levels", ["ports", "lua"])
@pytest.mark.parametrize("scorer", [exact_match_scorer, overlap_scorer])
def test_matches_slow_twin_on_random_boxes(scorer, levels):
    rng = np.random.default_rng(0)
    for trial in range(12):
        images = [random_image(rng) for _ in range(int(rng.integers(1, 6)))]
        ev = DenseCapEvaluator(scorer=scorer, recall_levels=levels)
        ev.process([{"image_id": i, "gt_boxes": b, "gt_captions": c} for i, (b, c, *_) in enumerate(images)],
                   [{"boxes": pb, "scores": ps, "captions": pc} for _, _, pb, ps, pc in images])
        out = ev.evaluate()
        assert out["recall_levels"] == levels
        want_map, want_aps = slow_map(images, scorer, levels=port_levels() if levels == "ports" else lua_levels())
        assert out["map"] == pytest.approx(want_map, abs=1e-12), trial
        assert list(out["ap"].values()) == pytest.approx(want_aps, abs=1e-12)
        assert out["n_pred"] == sum(len(x[3]) for x in images)


def test_merge_groups_match_slow_twin():
    rng = np.random.default_rng(1)
    for _ in range(30):
        boxes = random_image(rng)[0]
        assert dc.merge_boxes(np.array(boxes)) == slow_merge(boxes, 0.7)


# ------------------------------------------------------------------------------------------------ hand cases
GT = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]]
CAPS = ["a red ball", "a dog", "a tall tree"]


def run(gt, caps, boxes, scores, preds, scorer=exact_match_scorer):
    ev = DenseCapEvaluator(scorer=scorer)
    ev.add(gt, caps, boxes, scores, preds)
    return ev.evaluate()


def test_perfect_predictions_score_one():
    out = run(GT, CAPS, GT, [0.9, 0.8, 0.7], CAPS)
    assert out["map"] == 1.0 and out["det_map"] == 1.0 and out["n_gt"] == 3


def test_wrong_boxes_score_zero():
    far = [[100, 100, 110, 110], [200, 200, 230, 230], [5, 50, 9, 60]]
    out = run(GT, CAPS, far, [0.9, 0.8, 0.7], CAPS)
    assert out["map"] == 0.0 and out["det_map"] == 0.0


def test_right_boxes_wrong_captions():
    out = run(GT, CAPS, GT, [0.9, 0.8, 0.7], ["a cat", "a red ball", "a dog"])
    assert out["map"] == 0.0 and out["det_map"] == 1.0


def test_overlapping_ground_truth_is_merged():
    gt = [[0, 0, 10, 10], [0, 0, 10, 11], [30, 30, 40, 40]]  # IoU(0, 1) = 10/11 >= 0.7
    merged, refs = dc.merge_ground_truth(np.array(gt, float), ["a cat", "a kitten", "a dog"])
    assert refs == [["a cat", "a kitten"], ["a dog"]]
    assert merged[0] == pytest.approx([0, 0, 10, 10.5])
    # either reference of the merged box is a correct caption; a second prediction on it is a false positive
    out = run(gt, ["a cat", "a kitten", "a dog"], [[0, 0, 10, 10.5], [0, 0, 10, 10], [30, 30, 40, 40]],
              [0.9, 0.8, 0.7], ["a kitten", "a cat", "a dog"])
    assert out["n_gt"] == 2
    # ranks: TP, FP, TP over 2 boxes -> precision 1 up to recall .5, 2/3 after: 51 of the 100 levels k / 100
    # are <= .5 (see test_average_precision_by_hand_both_levels)
    assert out["map"] == pytest.approx((51 * 1 + 49 * 2 / 3) / 100)


def test_first_prediction_takes_the_box_even_with_a_wrong_caption():
    out = run(GT[:1], CAPS[:1], [GT[0], GT[0]], [0.9, 0.5], ["a dog", "a red ball"])
    assert out["map"] == 0.0 and out["det_map"] == 1.0


def test_thresholds_follow_iou_and_meteor():
    # IoU of the prediction with the box is 0.5: counts at t <= 0.5 only (3 of 5 IoU thresholds)
    out = run([[0, 0, 10, 10]], ["a b c d"], [[0, 0, 10, 5]], [1.0], ["a b x y"], scorer=overlap_scorer)
    # Jaccard 2/6 = 0.333 > every METEOR threshold
    assert out["map"] == pytest.approx(3 / 5)
    assert out["ap"]["iou0.5/meteor0.25"] == 1.0 and out["ap"]["iou0.6/meteor0"] == 0.0
    out = run([[0, 0, 10, 10]], ["a b c d"], [[0, 0, 10, 10]], [1.0], ["a x y z w v"], scorer=overlap_scorer)
    # Jaccard 1/9 = 0.111: above METEOR thresholds 0, .05, .1 only
    assert out["map"] == pytest.approx(3 / 6)


def test_recall_levels():
    # the ports: k / 100 for k < 100, computed as t / 100. (Scenic)
    assert dc.RECALL_LEVELS.tolist() == port_levels() and len(dc.RECALL_LEVELS) == 100
    # eval_utils.lua `for t=0,1,0.01`: 100 iterations; 0.01 summed 100 times is 1.0000000000000007 > 1
    assert len(dc.LUA_RECALL_LEVELS) == 100 and dc.LUA_RECALL_LEVELS.tolist() == lua_levels()
    assert dc.LUA_RECALL_LEVELS[0] == 0.0 and dc.LUA_RECALL_LEVELS[-1] == pytest.approx(0.99, abs=1e-12)
    assert dc.LUA_RECALL_LEVELS[25] > 0.25 and dc.LUA_RECALL_LEVELS[50] > 0.5 and dc.LUA_RECALL_LEVELS[75] > 0.75
    with pytest.raises(ValueError, match="recall_levels"):
        DenseCapEvaluator(recall_levels="101")


def test_average_precision_by_hand_both_levels():
    """DenseCap's AP: mean over 100 levels t of max(prec[rec >= t]), 0 if none.

    5 predictions in score order, 4 ground-truth boxes:
        rank  tp   precision  recall
          1   yes  1/1 = 1    1/4 = .25
          2   no   1/2        .25
          3   yes  2/3        2/4 = .5
          4   no   2/4 = .5   .5
          5   yes  3/5 = .6   3/4 = .75
    Interpolated precision: 1 for t <= .25, 2/3 for .25 < t <= .5, .6 for .5 < t <= .75, 0 above.
    The ports' levels k / 100 (Scenic: `rec >= t / 100.`) put 26 levels (0 .. .25) at 1, 25 at 2/3, 25 at .6:
        AP = (26 + 25 * 2/3 + 25 * .6) / 100 = 0.576666...
    The Lua loop's levels are float sums of 0.01: level 25 is 0.25000000000000006, level 50 0.5000000000000002,
    level 75 0.7500000000000004, each just above the exact recall, so each band holds 25 levels:
        AP = (25 + 25 * 2/3 + 25 * .6) / 100 = 0.5666...
    The old 101 levels 0, .01, .., 1 gave (26 + 25 * 2/3 + 25 * .6) / 101 = 0.570957..., 100/101 of the ports'.
    """
    tp = np.array([True, False, True, False, True])
    assert dc.average_precision(tp, 4) == pytest.approx((26 + 25 * 2 / 3 + 25 * 0.6) / 100, abs=1e-15)
    assert dc.average_precision(tp, 4) == pytest.approx(0.5766666666666667, abs=1e-12)
    lua = dc.LUA_RECALL_LEVELS
    assert dc.average_precision(tp, 4, lua) == pytest.approx((25 + 25 * 2 / 3 + 25 * 0.6) / 100, abs=1e-15)
    # TP, FP, TP over 2 boxes: precision 1 at recall .5, 2/3 at recall 1. Ports: levels 0 .. .5 (51) at 1;
    # Lua: levels 0 .. 0.49000000000000027 (50) at 1, 0.5000000000000002 .. 0.99 (50) at 2/3
    assert dc.average_precision(np.array([True, False, True]), 2) == pytest.approx((51 + 49 * 2 / 3) / 100)
    assert dc.average_precision(np.array([True, False, True]), 2, lua) == pytest.approx((50 + 50 * 2 / 3) / 100)
    # where no recall equals a level exactly, the two readings agree (3 boxes: recalls 1/3, 2/3, 1)
    tp3 = np.array([True, False, True, True])
    assert dc.average_precision(tp3, 3) == dc.average_precision(tp3, 3, lua)


def test_average_precision_by_hand():
    assert dc.average_precision(np.array([False, True]), 1) == pytest.approx(0.5)
    assert dc.average_precision(np.array([], bool), 3) == 0.0
    with pytest.raises(ValueError):
        dc.average_precision(np.array([True]), 0)


def test_bad_input_is_named():
    ev = DenseCapEvaluator(scorer=exact_match_scorer)
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        ev.add(GT, CAPS, GT[:2], [0.5], ["x", "y"])
    with pytest.raises(ValueError, match="ground-truth"):
        DenseCapEvaluator(scorer=exact_match_scorer).evaluate()


def test_meteor_fallback_without_java(monkeypatch):
    assert meteor_exact(["a red ball", "a dog"], [["a red ball"], ["the cat sat"]]) == [1.0, 0.0]
    mid = meteor_exact(["a dog runs on grass"], [["a dog runs fast on the grass"]])[0]
    assert 0.3 < mid < 1.0
    import dvsa.generate.metrics as metrics

    monkeypatch.setattr(metrics, "find_java", lambda: None)
    ev = DenseCapEvaluator()  # default scorer: METEOR via Java, absent here
    ev.add(GT, CAPS, GT, [0.9, 0.8, 0.7], CAPS)
    with pytest.warns(RuntimeWarning, match="java was not found"):
        out = ev.evaluate()
    assert out["scorer"] == "meteor_exact" and out["map"] == 1.0


def test_synthetic_scenes_ground_truth_scores_one(tmp_path):
    from dvsa.data.catalog import load_dataset
    from dvsa.data.synthetic import write_synthetic
    from dvsa.generate.densecap_eval import densecap_evaluate

    root = write_synthetic(tmp_path / "synth", n_train=0, n_val=12, n_test=0, size=64, seed=2)
    records = load_dataset("synthetic", str(root))
    truth = {r.id: {"regions": [{"box": g.box, "caption": g.text, "score": 1.0 - 0.1 * k}
                                for k, g in enumerate(r.regions)]} for r in records}
    out = densecap_evaluate(truth, records, scorer=exact_match_scorer)
    assert out["map"] == 1.0 and out["n_gt"] == sum(len(r.regions) for r in records)
    # the same boxes with the captions rotated by one over the whole set: only coincidences count
    flat = [d for r in records for d in truth[r.id]["regions"]]
    caps = [d["caption"] for d in flat]
    for d, c in zip(flat, caps[1:] + caps[:1]):
        d["caption"] = c
    shuffled = densecap_evaluate(truth, records, scorer=exact_match_scorer)
    assert shuffled["det_map"] == 1.0 and shuffled["map"] < 0.5
