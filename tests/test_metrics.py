"""Caption metrics: hand-checkable cases without Java, one test with the Java tokenizer and METEOR."""
import json
import os
from pathlib import Path

import dvsa.generate.metrics as metrics
import pytest
from dvsa.generate.metrics import (
    caption_metrics,
    coco_results,
    format_metrics,
    simple_ptb_tokenize,
)

UNIQUE = {  # every image's caption shares few n-grams with the others
    "1": ["a brown dog runs on the grass"],
    "2": ["two men play soccer in a park"],
    "3": ["a child eats a slice of cake"],
}


def _java_children() -> int:
    """Number of live java processes whose parent is this process (Linux /proc)."""
    n = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "java" in stat.split(")")[0]:
            n += 1
    return n


def test_identical_candidates_score_perfectly_without_java():
    res = {k: v[0] for k, v in UNIQUE.items()}
    m = caption_metrics(UNIQUE, res, use_java=False)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4"):
        assert m[k] == pytest.approx(1.0, abs=1e-6)
    assert m["rouge_l"] == pytest.approx(1.0)
    # CIDEr-D: cosine 1 for every image, x10; n-grams shared by all images carry no weight ("a")
    assert m["cider"] == pytest.approx(10.0, rel=1e-6)
    assert m["meteor"] is None


def test_disjoint_candidates_score_zero():
    res = {"1": "purple elephants sing", "2": "blue whales fly high", "3": "green stones melt slowly"}
    m = caption_metrics(UNIQUE, res, use_java=False)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"):
        assert m[k] < 1e-6, k


def test_bleu1_by_hand():
    # candidate "a dog runs fast" (4 words) vs reference "a dog runs on the grass" (6): 3 of 4 unigrams match,
    # brevity penalty exp(1 - 6/4)
    import math

    m = caption_metrics({"x": ["a dog runs on the grass"]}, {"x": "a dog runs fast"}, use_java=False)
    assert m["bleu1"] == pytest.approx(0.75 * math.exp(1 - 6 / 4), rel=1e-6)
    # ROUGE-L: LCS 3, P 3/4, R 3/6, beta 1.2
    p, r, b = 0.75, 0.5, 1.2
    assert m["rouge_l"] == pytest.approx((1 + b * b) * p * r / (r + b * b * p))


def test_python_tokenizer_mimics_ptb():
    assert simple_ptb_tokenize("A dog's ball, isn't it?") == "a dog 's ball is n't it"
    assert simple_ptb_tokenize('Two men (in red) play "soccer" -- fast...') == "two men -lrb- in red -rrb- play soccer fast"
    assert simple_ptb_tokenize("The T-shirt costs $3.50; it's 100% cotton!") == "the t-shirt costs $ 3.50 it 's 100 % cotton"


def test_missing_java_warns_and_falls_back(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert metrics.find_java() is None
    res = {k: v[0] for k, v in UNIQUE.items()}
    info = {}
    with pytest.warns(RuntimeWarning, match="java was not found on PATH"):
        m = caption_metrics(UNIQUE, res, info=info)
    assert m["meteor"] is None and m["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert info["tokenizer"] == "python"
    with pytest.raises(metrics.JavaMissingError, match="java was not found"):
        caption_metrics(UNIQUE, res, use_java=True)
    with pytest.raises(metrics.JavaMissingError):
        metrics.MeteorScorer()


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="no result caption"):
        caption_metrics({"1": ["a"], "2": ["b"]}, {"1": "a"}, use_java=False)
    with pytest.raises(ValueError, match="no references"):
        caption_metrics({"1": ["a"]}, {"1": "a", "9": "b"}, use_java=False)
    with pytest.raises(ValueError, match="non-empty lists"):
        caption_metrics({"1": "a dog"}, {"1": "a"}, use_java=False)


def test_coco_results_format(tmp_path):
    assert coco_results({"42": "a dog", "img_7": "a cat"}) == [
        {"image_id": 42, "caption": "a dog"}, {"image_id": "img_7", "caption": "a cat"}]
    p = metrics.write_coco_results(tmp_path / "r.json", {"1": "x"})
    assert json.loads(p.read_text()) == [{"image_id": 1, "caption": "x"}]
    line = format_metrics({"bleu1": 0.5791, "bleu2": 0.1, "bleu3": 0.1, "bleu4": 0.1, "meteor": None,
                           "rouge_l": 0.2, "cider": 0.66})
    assert "B1 57.9" in line and "METEOR n/a" in line and "CIDEr 66.0" in line
    table = metrics.format_table({"beam 7": {"bleu1": 0.625, "bleu2": 0.45, "bleu3": 0.321, "bleu4": 0.23,
                                             "meteor": 0.195, "rouge_l": None, "cider": 0.66}})
    head, row = table.splitlines()
    assert head.split() == ["B1", "B2", "B3", "B4", "METEOR", "ROUGE-L", "CIDEr"]
    assert row.split() == ["beam", "7", "62.5", "45.0", "32.1", "23.0", "19.5", "n/a", "66.0"]


@pytest.mark.skipif(metrics.find_java() is None, reason="java is not installed")
def test_java_tokenizer_and_meteor():
    """The one test that starts JVMs (PTB tokenizer once, METEOR once)."""
    sents = ["A dog's ball, isn't it?", "Two men (in red) play \"soccer\" -- fast...", "A man riding a horse.",
             "The woman's dog isn't happy.", "A black-and-white dog runs through the grass..."]
    java_tok = metrics.ptb_tokenize({i: [s] for i, s in enumerate(sents)}, java=True)
    assert [java_tok[i][0] for i in range(len(sents))] == [simple_ptb_tokenize(s) for s in sents]

    gts = {"1": ["A dog runs on the grass.", "A brown dog is running."], "2": ["Two men play soccer."],
           "3": ["A child eats cake!"]}
    res = {"1": "a dog running on grass", "2": "two men playing soccer", "3": "a child eats cake"}
    before = _java_children()
    with metrics.MeteorScorer() as m:
        info = {}
        with_java = caption_metrics(gts, res, meteor=m, info=info)
        assert info == {"tokenizer": "ptb", "meteor": "meteor-1.5", "n": 3}
        pairs = m.score_pairs(["a dog", "a cat on a mat", "purple"], [["a dog"], ["the cat sat on the mat"], ["x y"]])
        from dvsa.generate.densecap_eval import DenseCapEvaluator

        ev = DenseCapEvaluator(scorer=m)  # the open scorer serves the dense captioning mAP too
        ev.add([[0, 0, 10, 10], [20, 20, 40, 40]], ["a red ball", "a dog"], [[0, 0, 10, 10], [20, 20, 40, 40]],
               [0.9, 0.8], ["a red ball", "a cat"])
        dense = ev.evaluate()
        assert dense["scorer"] == "meteor-1.5" and 0 < dense["map"] < 1 and dense["det_map"] == 1.0
        proc = m.proc
        assert proc.poll() is None
    assert proc.poll() is not None  # closed with the context
    assert _java_children() == before  # nothing left running
    assert pairs[0] == pytest.approx(1.0) and 0.1 < pairs[1] < 0.9 and pairs[2] == 0.0
    assert 0.2 < with_java["meteor"] < 1.0
    # the Python tokenizer gives the same tokens here, so the Java-free metrics agree exactly
    without = caption_metrics(gts, res, use_java=False)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"):
        assert with_java[k] == pytest.approx(without[k]), k


def test_meteor_failure_is_reported_and_the_process_ended():
    """A JVM that dies or answers garbage: a RuntimeError saying so, and no process left behind."""
    import subprocess

    class Broken:
        def compute_score(self, gts, res):
            raise ValueError("could not convert string to float: ''")

    m = metrics.MeteorScorer.__new__(metrics.MeteorScorer)
    m._meteor = Broken()
    m.proc = subprocess.Popen(["sleep", "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with pytest.raises(RuntimeError, match="METEOR \\(java\\) failed"):
        m.score_pairs(["a dog"], [["a dog"]])
    assert m.proc.poll() is not None
    m.close()  # idempotent after a failure


def test_bleu_1_to_4_known_answer():
    """BLEU-1..4 as pycocoevalcap computes them (Papineni et al., corpus level, `Bleu(4)`, option "closest").

    Clipped n-gram counts are summed over the corpus; the brevity penalty uses the summed candidate length and
    the summed closest reference lengths (the shorter on ties); BLEU-n = BP * (prod_{k<=n} p_k)^(1/n).
      image 1: refs "a dog runs on the grass" (6), "a dog is running" (4); cand "a dog runs on grass" (5):
               closest ref length 4 (|6-5| = |4-5|: the shorter); 1-grams 5/5, 2-grams 3/4 ("on grass" misses),
               3-grams 2/3, 4-grams 1/2
      image 2: ref "two men play soccer in a park" (7); cand "two men play" (3): 3/3, 2/2, 1/1, 0/0
      corpus: p1 = 8/8, p2 = 5/6, p3 = 3/4, p4 = 1/2; lengths 8 vs 4 + 7 = 11: BP = exp(1 - 11/8)
    """
    import math

    gts = {"1": ["a dog runs on the grass", "a dog is running"], "2": ["two men play soccer in a park"]}
    res = {"1": "a dog runs on grass", "2": "two men play"}
    m = caption_metrics(gts, res, use_java=False)
    bp = math.exp(1 - 11 / 8)
    p = [1.0, 5 / 6, 3 / 4, 1 / 2]
    for n in range(1, 5):
        assert m[f"bleu{n}"] == pytest.approx(bp * math.prod(p[:n]) ** (1 / n), rel=1e-6), n


def test_cider_d_known_answer():
    """CIDEr-D as pycocoevalcap computes it (Vedantam et al. 2015; `Cider()`): n-gram tf-idf vectors, idf =
    log(#images) - log(max(1, #images whose references contain the n-gram)); per n = 1..4 the clipped cosine
    sum(min(c, r) * r) / (|c| |r|) (0 when a vector is empty) times exp(-delta^2 / (2 * 6^2)), delta the
    difference in length (pycocoevalcap counts bigrams); mean over n and references, x10; mean over images.

    Two images, L = log 2: "a", "black", "a black" are in both images' references (idf 0); every other n-gram
    has idf L.
      image 1: ref "a black dog", cand "a black cat": no weighted n-gram in common -> 0
      image 2: ref "a black bird", cand "a black bird": cosine 1 for n = 1, 2, 3; no 4-grams -> 0;
               10 * (1 + 1 + 1 + 0) / 4 = 7.5
      CIDEr = (0 + 7.5) / 2 = 3.75
    With cand "a black bird flies" for image 2, each of n = 1, 2, 3 has one extra weighted n-gram:
    cosine L^2 / (sqrt(2) L * L) = 1 / sqrt(2); delta = 3 - 2 bigrams: penalty exp(-1 / 72);
    image 2 = 10 * 3 / sqrt(2) * exp(-1/72) / 4, CIDEr = half of it.
    """
    import math

    gts = {"1": ["a black dog"], "2": ["a black bird"]}
    m = caption_metrics(gts, {"1": "a black cat", "2": "a black bird"}, use_java=False)
    assert m["cider"] == pytest.approx(3.75, rel=1e-9)
    m = caption_metrics(gts, {"1": "a black cat", "2": "a black bird flies"}, use_java=False)
    assert m["cider"] == pytest.approx(10 * 3 / math.sqrt(2) * math.exp(-1 / 72) / 4 / 2, rel=1e-9)


def test_vocabulary_use_by_hand():
    from dvsa.generate.metrics import format_vocabulary, vocabulary_use

    v = vocabulary_use({"a": "A dog runs.", "b": "a dog runs", "c": "A man rides a bike .", "d": "a dog runs !"})
    # "a dog runs" three times (case and punctuation do not count), "a man rides a bike" once
    assert v == {"n_captions": 4, "distinct_captions": 2, "distinct_words": 6, "mean_words": (3 * 3 + 5) / 4,
                 "top_caption": "a dog runs", "top_caption_share": 0.75}
    assert format_vocabulary(v).startswith("2 distinct captions of 4, 6 distinct words, 3.5 words each")
    with pytest.raises(ValueError):
        vocabulary_use({})
