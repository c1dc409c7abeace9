"""Caption metrics with the COCO caption evaluation code (`pycocoevalcap`): BLEU-1..4, METEOR, ROUGE-L, CIDEr.

`caption_metrics(gts, res)` scores one candidate caption per image against that image's reference captions,
as the COCO evaluation server does: every caption is first tokenized with the Stanford PTB tokenizer
(lowercased, punctuation removed), then scored. Values are what pycocoevalcap returns (BLEU, METEOR, ROUGE-L
in 0..1; CIDEr is not bounded by 1); reports multiply by 100 where the paper does.

The PTB tokenizer and METEOR are Java programs. Without a `java` on PATH, `caption_metrics` says so once
(a warning naming what is missing), tokenizes with `simple_ptb_tokenize`, a Python approximation of the PTB
tokenizer, and reports METEOR as None; BLEU, ROUGE-L and CIDEr are then pure Python.

`MeteorScorer` wraps pycocoevalcap's METEOR subprocess (one JVM) so that it is closed deterministically
(context manager / `close()`), and can score many (candidate, references) pairs in one call; the dense
captioning evaluator uses it for per-prediction METEOR.
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from dvsa.generate import formats
from dvsa.generate.formats import to_coco_results
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")

# Tokens that pycocoevalcap's PTBTokenizer drops after tokenizing (its PUNCTUATIONS list). With -lowerCase the
# Java tokenizer writes brackets as -lrb- etc. (lowercase), which are not in the list and so are kept.
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

JAVA_MISSING = (
    "java was not found on PATH: the COCO caption metrics need Java for the PTB tokenizer and METEOR. "
    "Falling back to a Python approximation of the PTB tokenizer; METEOR is reported as None. "
    "Install a Java runtime (8 or newer) for the official numbers."
)


class JavaMissingError(RuntimeError):
    """Raised when Java is required (use_java=True, or METEOR was asked for explicitly) but not on PATH."""


def find_java() -> str | None:
    """Path of the `java` executable pycocoevalcap will run, or None. (Tests monkeypatch PATH or this.)"""
    return shutil.which("java")


# ------------------------------------------------------------------------------------------------ tokenizers
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = frozenset("mr mrs ms dr jr sr st vs etc inc co ltd mt ft prof gen sgt".split())
_CLITICS = frozenset(["'s", "'re", "'ve", "'ll", "'d", "'m", "n't"])
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def _split_word(w: str) -> list[str]:
    """Split one whitespace-separated chunk the way PTB mostly does (see `simple_ptb_tokenize`)."""
    if w in _CLITICS:  # a clitic written apart ("a man 's hat") stays one token
        return [w]
    out_front: list[str] = []
    out_back: list[str] = []
    # leading quotes / brackets
    while w and (w[0] in "\"`'" or w[0] in _BRACKETS):
        out_front.append(_BRACKETS.get(w[0], "`"))
        w = w[1:]
    # trailing punctuation, brackets, quotes (repeat: 'dog.")' etc.)
    while w:
        if w.endswith("..."):
            out_back.insert(0, "...")
            w = w[:-3]
        elif w[-1] in ",;:!?\"" or w[-1] in _BRACKETS:
            out_back.insert(0, _BRACKETS.get(w[-1], "''" if w[-1] == '"' else w[-1]))
            w = w[:-1]
        elif w[-1] == "." and "." not in w[:-1] and not (len(w) == 2 or w[:-1] in _ABBREVIATIONS):
            # abbreviations keep their dot: p.m. (inner dots), single letters (u.), mr., jr., ...
            out_back.insert(0, ".")
            w = w[:-1]
        elif w[-1] == "'" and not w.endswith("n't"):
            out_back.insert(0, "'")
            w = w[:-1]
        else:
            break
    mid: list[str] = []
    if w:
        # currency / percent split off numbers: $3.50 -> $ 3.50, 100% -> 100 %
        if len(w) > 1 and w[0] == "$":
            mid.append("$")
            w = w[1:]
        tail = []
        if len(w) > 1 and w[-1] == "%":
            tail.append("%")
            w = w[:-1]
        m = _CLITIC.match(w)
        if m:  # dog's -> dog 's, isn't -> is n't, can't -> ca n't (as PTB)
            mid += [m.group(1), m.group(2)]
        elif w:
            mid.append(w)
        mid += tail
    return out_front + mid + out_back


def simple_ptb_tokenize(text: str) -> str:
    """Python approximation of pycocoevalcap's PTB tokenization: lowercase, split punctuation and clitics,
    drop the tokens PTBTokenizer drops. Returns space-joined tokens.

    'A dog's ball, isn't it?' -> "a dog 's ball is n't it". Known differences from the Java tokenizer: symbols
    inside words (PTB splits 'a=b'), abbreviations outside a short list losing their dot mid-sentence, and other
    corner cases of PTB's grammar (1 difference in 3,000 Flickr8k captions).
    """
    tokens: list[str] = []
    for chunk in text.lower().replace("\n", " ").replace("--", " -- ").split():
        tokens += _split_word(chunk)
    return " ".join(t for t in tokens if t and t not in PTB_PUNCTUATIONS)


def ptb_tokenize(captions: dict, java: bool = True) -> dict:
    """{key: [caption, ...]} -> {key: [tokenized caption, ...]} (same keys, same order).

    java=True runs pycocoevalcap's Stanford PTBTokenizer (one JVM for the whole dict); java=False uses
    `simple_ptb_tokenize`.
    """
    if not java:
        return {k: [simple_ptb_tokenize(c) for c in v] for k, v in captions.items()}
    # one caption per line: any line break inside a caption would shift every later caption
    keyed = {i: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in v] for i, v in enumerate(captions.values())}
    out = PTBTokenizer().tokenize(keyed)
    result = {k: out.get(i, []) for i, k in enumerate(captions)}
    bad = [k for k, v in captions.items() if len(result[k]) != len(v)]
    if bad:
        raise RuntimeError(f"the PTB tokenizer (java) returned a different number of captions for {bad[:3]}")
    return result


# ------------------------------------------------------------------------------------------------ METEOR
class MeteorScorer:
    """pycocoevalcap's METEOR 1.5 (a JVM subprocess) with a deterministic `close()`.

    Use as a context manager: ``with MeteorScorer() as m: m.score_pairs(cands, refs)``. pycocoevalcap's own
    class only stops its JVM in ``__del__``; here `close()` ends it (stdin closed, process killed and waited
    for, pipes closed) and is idempotent.
    """

    name = "meteor-1.5"

    def __init__(self):
        if find_java() is None:
            raise JavaMissingError("java was not found on PATH: METEOR (pycocoevalcap, Java) cannot run")
        self._meteor = Meteor()
        self.proc = self._meteor.meteor_p

    @staticmethod
    def _clean(s: str) -> str:
        # METEOR's line protocol: '|||' separates fields and a newline ends a request.
        s = " ".join(s.replace("|||", " ").split())
        return s

    def corpus_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        """(corpus METEOR, per-key METEOR) for gts {k: [refs]} and res {k: [one candidate]} (pycocoevalcap's
        `compute_score` contract; keys in the same set)."""
        if self._meteor is None:
            raise RuntimeError("MeteorScorer is closed")
        if not gts:
            return 0.0, []
        gts = {k: [self._clean(r) for r in v] for k, v in gts.items()}
        res = {k: [self._clean(v[0])] for k, v in res.items()}
        try:
            score, scores = self._meteor.compute_score(gts, res)
        except (ValueError, OSError) as e:  # the JVM died or answered garbage (e.g. out of memory)
            p, self._meteor = self.proc, None  # its lock is left held by compute_score: do not take it again
            p.kill()
            p.wait()
            err = p.stderr.read().decode(errors="replace").strip()[-2000:] if p.stderr else ""
            raise RuntimeError(f"METEOR (java) failed: {type(e).__name__}: {e}\n{err}") from None
        return float(score), [float(s) for s in scores]

    def score_pairs(self, candidates: list[str], references: list[list[str]]) -> list[float]:
        """METEOR of candidates[i] against references[i] (a non-empty list of strings), for every i.

        Reference: pycocoevalcap's Meteor (METEOR 1.5, `-l en -norm`), one SCORE/EVAL segment per pair, as
        DenseCap's eval/meteor_bridge.py scores each prediction against its merged box's references.
        """
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
        if not candidates:
            return []
        for i, refs in enumerate(references):
            if not refs:
                raise ValueError(f"pair {i}: METEOR needs at least one reference")
        gts = {i: list(r) for i, r in enumerate(references)}
        res = {i: [c] for i, c in enumerate(candidates)}
        return self.corpus_score(gts, res)[1]

    __call__ = score_pairs

    def close(self) -> None:
        m, self._meteor = self._meteor, None
        if m is None:
            return
        with m.lock:
            p = m.meteor_p
            try:
                p.stdin.close()
            except OSError:
                pass
            p.kill()
            p.wait()
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        # pycocoevalcap's __del__ would close again: harmless (closed pipe, already-reaped process)

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------ metrics
def _check_inputs(gts: dict, res: dict) -> None:
    missing = [k for k in res if k not in gts]
    if missing:
        raise ValueError(f"{len(missing)} results have no references, e.g. {missing[:3]}")
    extra = [k for k in gts if k not in res]
    if extra:
        raise ValueError(f"{len(extra)} images with references have no result caption, e.g. {extra[:3]}")
    empty = [k for k, v in gts.items() if isinstance(v, str) or len(v) == 0]
    if empty:
        raise ValueError(f"references must be non-empty lists of strings; bad for {empty[:3]}")
    notstr = [k for k, v in res.items() if not isinstance(v, str)]
    if notstr:
        raise ValueError(f"a result must be one caption string per image; bad for {notstr[:3]}")


def caption_metrics(
    gts: dict[str, list[str]],
    res: dict[str, str],
    use_java: bool | None = None,
    meteor: MeteorScorer | None = None,
    info: dict | None = None,
) -> dict:
    """Score one caption per image against its references with pycocoevalcap.

    Reference: pycocoevalcap (tylin/coco-caption, the COCO caption evaluation server's code), called directly:
    BLEU-1..4 = `Bleu(4)` (corpus-level BLEU, clipped counts, brevity penalty from the closest reference
    lengths), METEOR = `Meteor()` (METEOR 1.5 `-l en -norm`, corpus score), ROUGE-L = `Rouge()` (LCS F-measure,
    beta 1.2, from the best LCS precision and recall over the references), CIDEr = `Cider()` (CIDEr-D: idf from the references, clipping, Gaussian length
    penalty sigma 6, x10), after PTBTokenizer. Identical to pycocoevalcap with Java; without it only the
    tokenizer is approximated (`simple_ptb_tokenize`) and METEOR is None.

    gts: {image_id: [reference caption, ...]} (raw text); res: {image_id: candidate caption} (same keys).
    use_java: None = use Java when it is on PATH (warn and fall back otherwise); True = require it
    (JavaMissingError); False = never (Python tokenizer, METEOR None).
    meteor: an open MeteorScorer to reuse (else one is started and closed here).
    info: if given, filled with {"tokenizer": "ptb"|"python", "meteor": "meteor-1.5"|None, "n": N}.
    Returns {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"} as floats (meteor may be None).
    """
    _check_inputs(gts, res)
    if not gts:
        raise ValueError("no captions to score")
    have_java = find_java() is not None
    if use_java and not have_java:
        raise JavaMissingError(JAVA_MISSING)
    java = have_java if use_java is None else bool(use_java)
    if use_java is None and not have_java:
        warnings.warn(JAVA_MISSING, RuntimeWarning, stacklevel=2)

    keys = list(gts)
    # One tokenizer run for references and candidates together (one JVM instead of two).
    both = {("g", k): list(gts[k]) for k in keys}
    both.update({("r", k): [res[k]] for k in keys})
    tok = ptb_tokenize(both, java=java)
    g = {k: tok[("g", k)] for k in keys}
    r = {k: tok[("r", k)] for k in keys}

    bleu, _ = Bleu(4).compute_score(g, r, verbose=0)
    rouge, _ = Rouge().compute_score(g, r)
    cider, _ = Cider().compute_score(g, r)
    met = None
    if java:
        if meteor is not None:
            met = meteor.corpus_score(g, r)[0]
        else:
            with MeteorScorer() as m:
                met = m.corpus_score(g, r)[0]
    if info is not None:
        info.update({"tokenizer": "ptb" if java else "python", "meteor": "meteor-1.5" if java else None,
                     "n": len(keys)})
    out = {f"bleu{i + 1}": float(bleu[i]) for i in range(4)}
    out.update({"meteor": None if met is None else float(met), "rouge_l": float(rouge), "cider": float(cider)})
    return out


def vocabulary_use(res: dict[str, str]) -> dict:
    """How varied a generator's captions are (one per image, {image_id: caption}): {"n_captions",
    "distinct_captions", "distinct_words" (word types over all captions), "mean_words", "top_caption" (the most
    frequent one; the first of them on ties), "top_caption_share" (its fraction of the captions)}. Words are the
    lowercased `simple_ptb_tokenize` tokens (punctuation dropped); captions compare after the same tokenizing."""
    if not res:
        raise ValueError("no captions to describe")
    toks = [simple_ptb_tokenize(c).split() for c in res.values()]  # already without punctuation
    counts = Counter(" ".join(t) for t in toks)
    top, n_top = max(counts.items(), key=lambda kv: kv[1])
    return {"n_captions": len(toks), "distinct_captions": len(counts),
            "distinct_words": len({w for t in toks for w in t}), "mean_words": sum(map(len, toks)) / len(toks),
            "top_caption": top, "top_caption_share": n_top / len(toks)}


def format_vocabulary(v: dict) -> str:
    """'71 distinct captions of 80, 95 distinct words, 9.2 words each; most frequent (5%): "a dog runs"'."""
    return (f"{v['distinct_captions']} distinct captions of {v['n_captions']}, {v['distinct_words']} distinct words, "
            f"{v['mean_words']:.1f} words each; most frequent ({100 * v['top_caption_share']:.0f}%): "
            f"\"{v['top_caption']}\"")


def format_metrics(metrics: dict, scale: float = 100.0) -> str:
    """One-line table, metrics x100 as the paper reports them: 'B1 57.9  B2 38.3 ... CIDEr 66.0'."""
    names = {"bleu1": "B1", "bleu2": "B2", "bleu3": "B3", "bleu4": "B4", "meteor": "METEOR",
             "rouge_l": "ROUGE-L", "cider": "CIDEr"}
    parts = []
    for k in METRIC_KEYS:
        v = metrics.get(k)
        parts.append(f"{names[k]} {'n/a' if v is None else f'{v * scale:.1f}'}")
    return "  ".join(parts)


def format_table(rows: dict[str, dict], scale: float = 100.0) -> str:
    """Rows of metrics as an aligned text table, x100 as in the paper; None shows as n/a.

    {"full frame, beam 7": {...}, "regions": {...}} ->
        ``                    B1    B2    B3    B4  METEOR  ROUGE-L  CIDEr``
        ``full frame, beam 7  57.9  38.3  ...``
    """
    heads = ["B1", "B2", "B3", "B4", "METEOR", "ROUGE-L", "CIDEr"]
    width = max([len(n) for n in rows] + [0])
    lines = [" " * width + "".join(f"{h:>9}" for h in heads)]
    for name, m in rows.items():
        cells = ["n/a" if m.get(k) is None else f"{m[k] * scale:.1f}" for k in METRIC_KEYS]
        lines.append(f"{name:<{width}}" + "".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def coco_results(res: dict[str, str]) -> list[dict]:
    """{image_id: caption} -> COCO results format [{"image_id", "caption"}]: `generate.formats.to_coco_results`,
    the function ``dvsa caption`` writes with (COCO and integer ids as ints, other ids as they are)."""
    return to_coco_results(res)


def write_coco_results(path: str | os.PathLike, res: dict[str, str]) -> Path:
    """Write `coco_results(res)` as JSON to `path` (atomically; `generate.formats.write_coco_results`)."""
    return formats.write_coco_results(path, res)


def references_of(records: Iterable, key=lambda r: r.id) -> dict[str, list[str]]:
    """{image id: [raw sentence, ...]} from ImageRecords (the references for `caption_metrics`)."""
    return {str(key(r)): [s.raw for s in r.sentences] for r in records if r.sentences}
