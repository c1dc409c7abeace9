"""How well words land on the right regions: alignment evaluation against ground-truth phrases.

Works on any records whose `phrases` link token spans to `regions` with boxes: the synthetic scenes (one object
per phrase) and Flickr30k Entities (an entity may have several boxes).

- **Word-to-region accuracy**: over the content words of every phrase that has at least one ground-truth box,
  the fraction whose assigned region's box has IoU >= `iou` (0.5) with a ground-truth box of the phrase.
  Content words are the phrase's words that are not in `STOPWORDS` (determiners, possessives, a few
  prepositions and conjunctions): for the synthetic scenes that leaves exactly the size, colour and shape words
  (`data.synthetic_text.CONTENT_WORDS`).
- **Phrase-to-box accuracy** (the standard phrase grounding measure): a phrase's predicted box is the region
  that MOST of its content words were assigned to (all its words if none is a content word); ties go to the
  region with the highest summed word-region score over those words, then the lowest row. It is right when
  its IoU with ANY ground-truth box of the phrase's entity is >= `iou`. Phrases without a box are excluded
  (counted in `n_phrases_no_box`). The vote (rather than the best summed score, which does not depend on beta)
  makes the measure see the MRF's assignment.
- `phrase_upper_bound`: fraction of phrases for which SOME region of the store reaches the IoU (the best any
  aligner could do with these boxes).

`AlignmentEvaluator` has detectron2's ``reset / process / evaluate``; `evaluate_alignment` runs the model and
evaluates the MRF at a given beta next to the paper's per-word argmax (beta = 0). All accuracies are
fractions in 0..1.

Dimensions: B pairs, T words, R regions.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import torch
from dvsa.align.mrf import chain_mrf, snippet_counts
from dvsa.align.snippets import PairBatch, score_pairs, sentence_pairs
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import ImageRecord, Phrase
from dvsa.data.synthetic_text import word_groups
from torchvision.ops import box_iou

STOPWORDS = frozenset(
    "a an the this that these those some one his her their its my your our of and or with in on at to".split()
)


def phrase_boxes(record: ImageRecord, phrase: Phrase) -> list[list[float]]:
    """Ground-truth boxes of a phrase: every region of the record whose id is one of the phrase's region ids."""
    ids = set(phrase.region_ids)
    return [r.box for r in record.regions if r.id is not None and r.id in ids]


def sentence_phrases(record: ImageRecord, sentence_id: int, n_words: int, tokens: list[str],
                     stopwords: frozenset[str]) -> tuple[list[tuple[Phrase, list[list[float]], list[int], list[int]]], int]:
    """The phrases of one sentence of `record` that can be scored: ([(phrase, its gt boxes, its token
    positions (span, cut at `n_words`), its content positions (not in `stopwords`))], phrases without a box).
    Phrases with no word left after the cut are skipped."""
    out, no_box = [], 0
    for p in record.phrases:
        if p.sentence_id != sentence_id:
            continue
        gt = phrase_boxes(record, p)
        if not gt:
            no_box += 1
            continue
        span = list(range(p.start, min(p.end, n_words)))
        if span:
            out.append((p, gt, span, [t for t in span if tokens[t] not in stopwords]))
    return out, no_box


def vote(regions: list[int], word_scores: torch.Tensor) -> int:
    """The region most of the words are on; ties -> highest summed score word_scores [n, R] over them, then lowest row."""
    counts = Counter(regions)
    top = max(counts.values())
    tied = sorted(r for r, c in counts.items() if c == top)
    if len(tied) == 1:
        return tied[0]
    sums = word_scores[:, tied].sum(0)
    return tied[int(torch.argmax(sums))]  # argmax returns the first maximum: lowest row among equals


class AlignmentEvaluator:
    """Accumulates word and phrase grounding over batches of scored pairs and their assignments."""

    def __init__(self, iou: float = 0.5, stopwords: frozenset[str] = STOPWORDS, groups: dict | None = None):
        """groups: optional {name: words} (e.g. `data.synthetic_text.word_groups()`): content-word accuracy is
        also reported per group."""
        self.iou, self.stopwords = iou, frozenset(stopwords)
        self.group_of = {w: g for g, words in (groups or {}).items() for w in words}
        self.reset()

    def reset(self) -> None:
        self.words_right = self.words = 0
        self.phrases_right = self.phrases = self.phrases_no_box = self.phrases_reachable = 0
        self.snippet_words = self.snippets = self.sentences = 0
        self.by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.by_group: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.images: set[str] = set()

    def process(self, batch: PairBatch, assign: torch.Tensor) -> None:
        """batch: scored pairs (`align.snippets.PairBatch`); assign long [B, T] (region row per word, -1 padding)."""
        w, s = snippet_counts(assign, batch.lengths)
        self.snippet_words, self.snippets = self.snippet_words + w, self.snippets + s
        for k, (rec, sent) in enumerate(zip(batch.records, batch.sentences)):
            self.sentences += 1
            self.images.add(rec.id)
            n = int(batch.lengths[k])
            real = batch.region_mask[k]
            boxes = batch.boxes[k]  # [R, 4]
            phrases, no_box = sentence_phrases(rec, sent.id, n, sent.tokens, self.stopwords)
            self.phrases_no_box += no_box
            for p, gt, span, content in phrases:
                # [R] best IoU of each region with the truth (torchvision's box_iou, in float64)
                ious = box_iou(torch.as_tensor(boxes).double(), torch.tensor(gt, dtype=torch.float64)).amax(1)
                hit = (ious >= self.iou) & real  # [R]
                for t in content:
                    right = int(hit[int(assign[k, t])])
                    self.words += 1
                    self.words_right += right
                    group = self.group_of.get(sent.tokens[t])
                    if group is not None:
                        self.by_group[group][0] += right
                        self.by_group[group][1] += 1
                voters = content or span
                pred = vote([int(assign[k, t]) for t in voters], batch.unary[k, voters])
                right = int(hit[pred])
                self.phrases += 1
                self.phrases_right += right
                self.phrases_reachable += int(hit.any())
                label = next((r.label for r in rec.regions if r.id in set(p.region_ids) and r.label), None)
                if label:
                    entry = self.by_label[label]
                    entry[0] += right
                    entry[1] += 1

    def evaluate(self) -> dict:
        """word_accuracy, phrase_accuracy, phrase_upper_bound (fractions 0..1), counts, mean_snippet_len and
        phrase_accuracy_by_label ({label: fraction})."""
        if self.phrases == 0:
            raise ValueError("no phrase with a ground-truth box was evaluated (do the records carry phrases and "
                             "regions, and are their images in the feature store?)")
        return {
            "word_accuracy": self.words_right / self.words if self.words else 0.0,
            "phrase_accuracy": self.phrases_right / self.phrases,
            "phrase_upper_bound": self.phrases_reachable / self.phrases,
            "mean_snippet_len": self.snippet_words / self.snippets if self.snippets else 0.0,
            "n_words": self.words,
            "n_phrases": self.phrases,
            "n_phrases_no_box": self.phrases_no_box,
            "n_sentences": self.sentences,
            "n_images": len(self.images),
            "iou": self.iou,
            "phrase_accuracy_by_label": {k: v[0] / v[1] for k, v in sorted(self.by_label.items())},
            "word_accuracy_by_group": {k: v[0] / v[1] for k, v in sorted(self.by_group.items())},
            "n_words_by_group": {k: v[1] for k, v in sorted(self.by_group.items())},
        }


def word_groups_for(dataset: str) -> dict | None:
    """The groups of content words reported apart for a dataset: colour / shape / size words on the synthetic
    scenes (`data.synthetic_text.word_groups`), None elsewhere."""
    if dataset != "synthetic":
        return None
    return word_groups()


def grounded_records(records: list[ImageRecord]) -> list[ImageRecord]:
    """Records with at least one phrase (phrases without a box are counted as excluded)."""
    return [r for r in records if r.phrases]


def evaluate_alignment(model, vocab, store, records: list[ImageRecord], beta: float, *, iou: float = 0.5,
                       stopwords: frozenset[str] = STOPWORDS, batch_size: int = 256, device: str = "cpu",
                       sweep: tuple[float, ...] = (), groups: dict | None = None, progress: bool = True) -> dict:
    """Word and phrase grounding of the MRF at `beta` and of the per-word argmax (beta = 0) on `records`.

    Every sentence of every record that has a phrase (and whose image is in `store`) is aligned; the scores
    are computed once and every beta reuses them. Returns {word_accuracy, phrase_accuracy, word_accuracy_argmax,
    phrase_accuracy_argmax, phrase_upper_bound, beta, mean_snippet_len, mean_snippet_len_argmax, n_words,
    n_phrases, n_phrases_no_box, n_sentences, n_images, n_missing_images, iou, phrase_accuracy_by_label,
    phrase_accuracy_by_label_argmax, word_accuracy_by_group, word_accuracy_by_group_argmax, n_words_by_group,
    sweep}; `groups` ({name: words}) asks for the content-word accuracy per group of words; `sweep` lists {beta,
    word_accuracy, phrase_accuracy, mean_snippet_len} for each extra beta asked for (to see how the gain of the
    MRF depends on beta). `progress`: a bar over the sentences (`dvsa.data.progress`).
    """
    grounded = grounded_records(records)
    if not any(phrase_boxes(r, p) for r in grounded for p in r.phrases):
        raise ValueError("none of the records has a phrase linked to a ground-truth box: nothing to evaluate")
    missing: list[str] = []
    pairs = sentence_pairs(grounded, store, missing)
    betas = [float(beta), 0.0] + [float(b) for b in sweep]
    evals = [AlignmentEvaluator(iou, stopwords, groups) for _ in betas]
    bar = progress_bar(total=len(pairs), desc="grounding", unit="sent", enabled=progress)
    for batch in score_pairs(model, vocab, store, pairs, batch_size, device):
        for b, ev in zip(betas, evals):
            ev.process(batch, chain_mrf(batch.unary, batch.lengths, batch.region_mask, b).assign)
        bar.update(len(batch.records))
    bar.close()
    out = evals[0].evaluate()
    base = evals[1].evaluate()
    rows = []
    for b, ev in zip(betas[2:], evals[2:]):
        r = ev.evaluate()
        rows.append({"beta": b, **{k: r[k] for k in ("word_accuracy", "phrase_accuracy", "mean_snippet_len")}})
    out.update(
        beta=float(beta),
        word_accuracy_argmax=base["word_accuracy"],
        phrase_accuracy_argmax=base["phrase_accuracy"],
        mean_snippet_len_argmax=base["mean_snippet_len"],
        phrase_accuracy_by_label_argmax=base["phrase_accuracy_by_label"],
        word_accuracy_by_group_argmax=base["word_accuracy_by_group"],
        n_missing_images=len(missing),
        sweep=rows,
    )
    return out


def format_table(res: dict) -> str:
    """The MRF next to the per-word argmax as a small text table (percent)."""
    rows = [("per-word argmax (beta 0)", res["word_accuracy_argmax"], res["phrase_accuracy_argmax"],
             res["mean_snippet_len_argmax"]),
            (f"MRF (beta {res['beta']:.3g})", res["word_accuracy"], res["phrase_accuracy"], res["mean_snippet_len"])]
    rows += [(f"MRF (beta {r['beta']:.3g})", r["word_accuracy"], r["phrase_accuracy"], r["mean_snippet_len"])
             for r in res.get("sweep", [])]
    lines = [f"{'aligner':<26} {'word acc':>9} {'phrase acc':>11} {'snippet len':>12}"]
    lines += [f"{name:<26} {100 * w:>8.1f}% {100 * p:>10.1f}% {n:>12.2f}" for name, w, p, n in rows]
    for group, acc in res.get("word_accuracy_by_group", {}).items():
        base = res.get("word_accuracy_by_group_argmax", {}).get(group, float("nan"))
        n = res["n_words_by_group"][group]
        lines.append(f"  {group} words ({n}): MRF {100 * acc:.1f}%, argmax {100 * base:.1f}%")
    lines.append(f"{res['n_words']} content words, {res['n_phrases']} phrases with a box ({res['n_phrases_no_box']} "
                 f"without, excluded), {res['n_images']} images; IoU >= {res['iou']}; boxes reachable for "
                 f"{100 * res['phrase_upper_bound']:.1f}% of phrases")
    return "\n".join(lines)
