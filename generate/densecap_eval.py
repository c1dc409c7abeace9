"""Dense captioning mean average precision, DenseCap's protocol (Johnson, Karpathy, Fei-Fei, CVPR 2016).

Reference: `DenseCaptioningEvaluator` in jcjohnson/densecap's eval/eval_utils.lua (with `box_utils.merge_boxes`
and eval/meteor_bridge.py), as its Python ports compute it (Scenic's `DensecapEval` in
scenic/projects/densevoc/densevoc_evaluator.py: the same merging, matching and thresholds, recall levels t / 100).
For every image:
  1. Ground-truth boxes overlapping with IoU >= 0.7 are merged (`merge_boxes`, DenseCap's greedy grouping:
     repeatedly take the box with the most neighbours at IoU >= 0.7, group it with them). A merged box is the
     mean of its group; all the group's captions become its references.
  2. Predictions are visited in decreasing score; each takes the merged ground-truth box it overlaps most
     (IoU > 0; first on ties). Only the first prediction to take a box may count as a true positive ("ok");
     later ones are false positives. This assignment does not depend on the thresholds, as in DenseCap.
  3. Each (ok) prediction's caption is scored with METEOR against its box's references (one METEOR 1.5
     `-l en -norm` segment score per prediction, as meteor_bridge.py).
Over all images, predictions sorted by score, for each IoU threshold t in {0.3, 0.4, 0.5, 0.6, 0.7} and METEOR
threshold m in {0, 0.05, 0.1, 0.15, 0.2, 0.25}: a prediction is a true positive when it is ok, its IoU >= t and
its METEOR > m (strictly, as DenseCap's code: at m = 0 a caption must share something with the references).
AP is DenseCap's max-interpolated average precision: the mean, over 100 recall levels t, of the best precision
at recall >= t (0 if no rank reaches t); recall is over all merged ground-truth boxes. mAP is the mean over the
30 pairs. The levels (`recall_levels`):
  - "ports" (the default, `RECALL_LEVELS`): t = k / 100 for k = 0 .. 99, as Scenic's port (`for t in range(100):
    rec >= t / 100.`), whose numbers published dense-captioning mAPs are compared with;
  - "lua" (`LUA_RECALL_LEVELS`): the values the Lua loop `for t=0,1,0.01` visits, 0 and then float sums of 0.01
    (100 of them: the 101st sum, 1.0000000000000007, passes 1, so recall 1 is never a level). They differ from
    k / 100 by a few ulp (e.g. level 25 is 0.25000000000000006), which changes an AP only where a recall equals
    such a k / 100 exactly (1 of 4 boxes found): the Lua level is then not reached at that rank.
`det_map` is DenseCap's "detmap": the same with its METEOR threshold -1, i.e. no caption condition
(METEOR >= 0 > -1), averaged over the 5 IoU thresholds.

Boxes are [x1, y1, x2, y2] in pixels, continuous coordinates: IoU = intersection / union of the areas, as
torchvision.ops.box_iou and Scenic's port (no "+1" pixel convention). DenseCap's Lua code (the matching loop in
eval_utils.lua and `box_utils.iou_matrix` used by `merge_boxes`) counts inclusive pixels, width = x2 - x1 + 1;
IoUs of boxes tens of pixels wide differ by up to about 0.01 between the two conventions.

The caption scorer is pluggable: `scorer(candidates: list[str], references: list[list[str]]) -> list[float]`.
The default is pycocoevalcap's METEOR (Java, `generate.metrics.MeteorScorer`); without Java it falls back to
`meteor_exact`, a Python METEOR restricted to exact word matches (no stems, synonyms, paraphrases), with a
warning, and `evaluate()` says which scorer ran.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from dvsa.data.progress import progress as progress_bar
from dvsa.generate.metrics import JavaMissingError, MeteorScorer
from torchvision.ops import box_iou as tv_box_iou

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
METEOR_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
MERGE_IOU = 0.7


def _lua_recall_levels(step: float = 0.01) -> np.ndarray:
    """The values DenseCap's Lua loop `for t=0,1,0.01` visits: t = 0, then t += 0.01 (float addition) while
    t <= 1. 100 levels, the last 0.99000000000000066 (the next sum, 1.0000000000000007, passes 1)."""
    levels, t = [], 0.0
    while t <= 1.0:
        levels.append(t)
        t += step
    return np.array(levels, np.float64)


RECALL_LEVELS = np.arange(100, dtype=np.float64) / 100.0  # Scenic's port: t / 100. for t in range(100)
LUA_RECALL_LEVELS = _lua_recall_levels()
LEVELS = {"ports": RECALL_LEVELS, "lua": LUA_RECALL_LEVELS}

Scorer = Callable[[list[str], list[list[str]]], list[float]]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix float64 [N, M] of boxes a [N, 4] and b [M, 4] ([x1, y1, x2, y2]); 0 where the union is 0.

    torchvision.ops.box_iou in float64 (continuous coordinates, no +1 pixel; see the module doc for DenseCap's
    Lua convention). An inverted box (x2 < x1 or y2 < y1) counts as empty, and an IoU with an empty union
    (two empty boxes) is 0 rather than torchvision's NaN.
    """
    a = np.array(a, np.float64).reshape(-1, 4)
    b = np.array(b, np.float64).reshape(-1, 4)
    for x in (a, b):  # inverted -> empty (same intersection, area 0)
        x[:, 2:] = np.maximum(x[:, 2:], x[:, :2])
    iou = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return np.nan_to_num(iou, nan=0.0)


def merge_boxes(boxes: np.ndarray, threshold: float = MERGE_IOU) -> list[list[int]]:
    """DenseCap's grouping of ground-truth boxes [G, 4]: list of groups (indices into boxes), every box in
    exactly one group. Repeatedly: the box with the most boxes at IoU >= threshold (itself included; the
    first such box on ties) forms a group with them; they are removed."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    d = box_iou(boxes, boxes)
    np.fill_diagonal(d, 1.0)  # a degenerate box is still its own group
    groups = []
    while True:
        good = d >= threshold
        counts = good.sum(axis=0)
        top = int(np.argmax(counts)) if len(counts) else 0
        if not len(counts) or counts[top] == 0:
            break
        members = np.flatnonzero(good[top])
        groups.append(members.tolist())
        d[members, :] = 0.0
        d[:, members] = 0.0
    return groups


def merge_ground_truth(
    boxes: np.ndarray, captions: Sequence[str], threshold: float = MERGE_IOU
) -> tuple[np.ndarray, list[list[str]]]:
    """(merged boxes float64 [G', 4] = mean of each group, references: list of the group's captions)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(captions) != len(boxes):
        raise ValueError(f"{len(boxes)} ground-truth boxes but {len(captions)} captions")
    groups = merge_boxes(boxes, threshold)
    merged = np.array([boxes[g].mean(axis=0) for g in groups], np.float64).reshape(-1, 4)
    return merged, [[captions[i] for i in g] for g in groups]


def average_precision(tp: np.ndarray, n_pos: int, levels: np.ndarray = RECALL_LEVELS) -> float:
    """DenseCap's max-interpolated AP of a ranked list: tp bool [P] in decreasing score, n_pos ground truths.

    Precision and recall at every rank; AP = mean over `levels` (float [L], nondecreasing; default the ports'
    k / 100, k < 100; `LUA_RECALL_LEVELS` for the Lua loop's float sums) of the max precision at recall >= t,
    0 where no rank reaches t. An empty list scores 0 (DenseCap's Lua would fail on torch.max of an empty
    tensor; Scenic's port gives 0).
    """
    if n_pos <= 0:
        raise ValueError("average precision needs at least one ground-truth box")
    tp = np.asarray(tp, bool)
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    rec = ctp / n_pos
    prec = ctp / np.arange(1, tp.size + 1)
    best_after = np.maximum.accumulate(prec[::-1])[::-1]  # best precision at this rank or later
    first = np.searchsorted(rec, levels, side="left")  # rec is nondecreasing
    p = np.where(first < tp.size, best_after[np.minimum(first, tp.size - 1)], 0.0)
    return float(p.mean())


# ------------------------------------------------------------------------------------------------ METEOR fallback
def _chunks(alignment: list[tuple[int, int]]) -> int:
    """Number of runs of matches adjacent in both candidate and reference."""
    if not alignment:
        return 0
    alignment = sorted(alignment)
    n = 1
    for (i0, j0), (i1, j1) in zip(alignment, alignment[1:]):
        if not (i1 == i0 + 1 and j1 == j0 + 1):
            n += 1
    return n


def _meteor_one(cand: list[str], ref: list[str], alpha=0.85, beta=0.2, gamma=0.6) -> float:
    if not cand or not ref:
        return 0.0
    # exact-match alignment: each candidate word to the nearest unused identical reference word (left to right)
    used = [False] * len(ref)
    alignment = []
    for i, w in enumerate(cand):
        best = None
        for j, r in enumerate(ref):
            if not used[j] and r == w and (best is None or abs(j - i) < abs(best - i)):
                best = j
        if best is not None:
            used[best] = True
            alignment.append((i, best))
    m = len(alignment)
    if m == 0:
        return 0.0
    p, r = m / len(cand), m / len(ref)
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    ch = _chunks(alignment)
    frag = 0.0 if (ch == 1 and m == len(cand) == len(ref)) else ch / m  # METEOR 1.5: no penalty for a full match
    return fmean * (1 - gamma * frag**beta)


def meteor_exact(candidates: list[str], references: list[list[str]]) -> list[float]:
    """Python METEOR with exact word matches only (lowercased whitespace tokens), best over the references.

    Fmean = P R / (alpha P + (1 - alpha) R), score = Fmean (1 - gamma (chunks / matches)^beta) with METEOR
    1.5's English parameters alpha 0.85, beta 0.2, gamma 0.6 (no function-word weighting). Lower than METEOR
    1.5, which also matches stems, synonyms and paraphrases: a fallback for machines without Java, not a
    replacement.
    """
    out = []
    for c, refs in zip(candidates, references, strict=True):
        ct = c.lower().split()
        out.append(max((_meteor_one(ct, r.lower().split()) for r in refs), default=0.0))
    return out


def exact_match_scorer(candidates: list[str], references: list[list[str]]) -> list[float]:
    """1.0 when the candidate equals one of its references (after whitespace/case normalisation), else 0.0."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return [float(norm(c) in {norm(r) for r in refs}) for c, refs in zip(candidates, references, strict=True)]


# ------------------------------------------------------------------------------------------------ evaluator
SCORE_CHUNK = 2000  # caption pairs per scorer call when there are more (the progress bar's step)


def _scored(score: Callable, cands: list[str], refs: list[list[str]], progress: bool = True):
    """score(cands, refs), called `SCORE_CHUNK` pairs at a time when there are more (per-pair scores do not
    depend on the other pairs of a call), with a progress bar."""
    bar = progress_bar(total=len(cands), desc="caption scores", unit="pair", enabled=progress)
    try:
        if len(cands) <= SCORE_CHUNK:
            vals = score(cands, refs)
            bar.update(len(cands))
            return vals
        vals = []
        for s in range(0, len(cands), SCORE_CHUNK):
            vals += list(score(cands[s : s + SCORE_CHUNK], refs[s : s + SCORE_CHUNK]))
            bar.update(len(cands[s : s + SCORE_CHUNK]))
        return vals
    finally:
        bar.close()


class DenseCapEvaluator:
    """detectron2-style evaluator: `reset()`, `process(inputs, outputs)` per batch, `evaluate()` at the end.

    inputs: list of {"image_id", "gt_boxes" [G, 4], "gt_captions" [G]} (raw ground truth, merged here);
    outputs: list of {"boxes" [P, 4], "scores" [P], "captions" [P]} (same order as inputs).
    scorer: caption scorer (see module doc); None = METEOR via Java, else `meteor_exact` with a warning.
    progress: a bar over the caption scoring (`dvsa.data.progress`), which then goes `SCORE_CHUNK` pairs a call.
    recall_levels: "ports" (k / 100, as Scenic's port; the default) or "lua" (the Lua loop's float sums); see the
    module doc.
    """

    def __init__(
        self,
        scorer: Scorer | None = None,
        iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
        meteor_thresholds: Sequence[float] = METEOR_THRESHOLDS,
        merge_iou: float = MERGE_IOU,
        progress: bool = True,
        recall_levels: str = "ports",
    ):
        if recall_levels not in LEVELS:
            raise ValueError(f"recall_levels={recall_levels!r}; choose one of {', '.join(LEVELS)}")
        self.recall_levels = recall_levels
        self.scorer = scorer
        self.progress = bool(progress)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.meteor_thresholds = tuple(float(m) for m in meteor_thresholds)
        self.merge_iou = float(merge_iou)
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []  # per image: prediction scores, in visiting order
        self._iou: list[np.ndarray] = []  # IoU with the assigned merged GT box (0 if none)
        self._ok: list[np.ndarray] = []  # first prediction to take its GT box
        self._cands: list[str] = []
        self._refs: list[list[str] | None] = []
        self.n_pos = 0
        self.n_images = 0

    def add(self, gt_boxes, gt_captions, boxes, scores, captions) -> None:
        """One image: ground truth (boxes [G, 4], captions [G]) and predictions (boxes [P, 4], scores [P],
        captions [P])."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if not (len(boxes) == len(scores) == len(captions)):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores, {len(captions)} captions: must be equal")
        merged, refs = merge_ground_truth(gt_boxes, list(gt_captions), self.merge_iou)
        order = np.argsort(-scores, kind="stable")
        iou = box_iou(boxes[order], merged)  # [P, G']
        if iou.shape[1]:
            j = iou.argmax(axis=1)
            best = iou[np.arange(len(order)), j]
        else:
            j = np.zeros(len(order), int)
            best = np.zeros(len(order))
        has = best > 0
        ok = np.zeros(len(order), bool)
        # ok = the first prediction (in score order) whose best box is that box
        first = {}
        for k in np.flatnonzero(has):
            first.setdefault(int(j[k]), int(k))
        ok[list(first.values())] = True
        self._scores.append(scores[order])
        self._iou.append(np.where(has, best, 0.0))
        self._ok.append(ok)
        for k, o in enumerate(order):
            self._cands.append(str(captions[o]))
            self._refs.append(refs[int(j[k])] if has[k] else None)
        self.n_pos += len(merged)
        self.n_images += 1

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            self.add(inp["gt_boxes"], inp["gt_captions"], out["boxes"], out["scores"], out["captions"])

    def _caption_scores(self, need: np.ndarray) -> tuple[np.ndarray, str]:
        idx = np.flatnonzero(need)
        scores = np.full(len(need), -np.inf)
        if not len(idx):
            return scores, "none"
        cands = [self._cands[i] for i in idx]
        refs = [self._refs[i] for i in idx]
        if self.scorer is not None:
            name = getattr(self.scorer, "name", None) or getattr(self.scorer, "__name__", type(self.scorer).__name__)
            vals = _scored(self.scorer, cands, refs, self.progress)
        else:
            try:
                with MeteorScorer() as m:
                    vals, name = _scored(m.score_pairs, cands, refs, self.progress), m.name
            except JavaMissingError as e:
                warnings.warn(f"{e}; dense captioning mAP uses meteor_exact (exact word matches only): "
                              "numbers are lower than with METEOR 1.5", RuntimeWarning, stacklevel=3)
                vals, name = meteor_exact(cands, refs), "meteor_exact"
        vals = np.asarray(vals, np.float64)
        if vals.shape != (len(idx),):
            raise ValueError(f"caption scorer returned {vals.shape} scores for {len(idx)} pairs")
        scores[idx] = vals
        return scores, name

    def evaluate(self) -> dict:
        """{"map", "ap": {"iou0.3/meteor0.05": AP, ...}, "det_map", "det_ap": {"iou0.3": AP, ...},
        "n_images", "n_gt" (merged boxes), "n_pred", "scorer", "recall_levels"}; APs in 0..1."""
        if self.n_pos == 0:
            raise ValueError("dense captioning AP needs at least one ground-truth box")
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        iou = np.concatenate(self._iou) if self._iou else np.zeros(0)
        ok = np.concatenate(self._ok) if self._ok else np.zeros(0, bool)
        # only predictions that can be a true positive at some threshold need a caption score
        need = ok & (iou >= min(self.iou_thresholds))
        cap, scorer_name = self._caption_scores(need)
        order = np.argsort(-scores, kind="stable")
        iou, ok, cap = iou[order], ok[order], cap[order]
        ap, det_ap = {}, {}
        levels = LEVELS[self.recall_levels]
        for t in self.iou_thresholds:
            hit = ok & (iou >= t)
            det_ap[f"iou{t:g}"] = average_precision(hit, self.n_pos, levels)
            for m in self.meteor_thresholds:
                ap[f"iou{t:g}/meteor{m:g}"] = average_precision(hit & (cap > m), self.n_pos, levels)
        return {
            "map": float(np.mean(list(ap.values()))),
            "ap": ap,
            "det_map": float(np.mean(list(det_ap.values()))),
            "det_ap": det_ap,
            "n_images": self.n_images,
            "n_gt": self.n_pos,
            "n_pred": int(len(scores)),
            "scorer": scorer_name,
            "recall_levels": self.recall_levels,
        }


# ------------------------------------------------------------------------------------------------ convenience
def densecap_inputs(predictions, records) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) for `DenseCapEvaluator.process` from dense captioning results (`generate.dense`:
    a list of per-image results, or {image_id: result}) and ImageRecords whose regions carry text (the ground
    truth). Images without a result or without described regions are left out."""
    if isinstance(predictions, dict):
        by_id = {str(k): v for k, v in predictions.items()}
    else:
        by_id = {str(r["image_id"]): r for r in predictions}
    inputs, outputs = [], []
    for rec in records:
        gt = [g for g in rec.regions if g.text]
        if not gt or rec.id not in by_id or by_id[rec.id] is None:
            continue
        res = by_id[rec.id]["regions"]
        inputs.append({"image_id": rec.id, "gt_boxes": [g.box for g in gt], "gt_captions": [g.text for g in gt]})
        outputs.append({"boxes": [d["box"] for d in res], "scores": [d["score"] for d in res],
                        "captions": [d["caption"] for d in res]})
    return inputs, outputs


def densecap_evaluate(predictions, records: Iterable, scorer: Scorer | None = None, **kw) -> dict:
    """`DenseCapEvaluator.evaluate()` of dense results against the described regions of `records`."""
    ev = DenseCapEvaluator(scorer=scorer, **kw)
    ev.process(*densecap_inputs(predictions, list(records)))
    return ev.evaluate()


def densecap_map(predictions, records: Iterable, scorer: Scorer | None = None, **kw) -> float:
    """DenseCap mAP (0..1) of dense results against the described regions of `records`."""
    return densecap_evaluate(predictions, records, scorer, **kw)["map"]
