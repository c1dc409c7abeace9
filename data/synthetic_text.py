"""The sentence grammar of the synthetic scenes: noun phrases, templates, and which words are content words.

A sentence is built from parts; a part that names an object carries that object's index, so every sentence
comes with exact phrase spans over `data.text.tokenize(raw)` tokens (start inclusive, end exclusive).

Content words (`CONTENT_WORDS`) are the words that describe one object: its colour, its shape noun (with all
synonyms, e.g. "ball" for a circle) and its size adjective ("small", "tiny", "big", ...). Everything else is a
function word for the alignment measure: determiners ("a", "the"), verbs ("is", "sits"), relations ("left",
"of", "above", "next", "to"), positions ("top", "corner", "middle"), counts ("two", "shapes"), and background
words ("striped", "background"). Every content word of a generated sentence lies inside a phrase that names the
object it describes; `content_word_targets` lists them as (sentence id, token index, object id).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import ImageRecord
from .text import tokenize

# canonical name -> the words sentences may use for it (the first is the canonical one)
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
    "cross": ("cross", "plus"),
    "ring": ("ring", "donut", "hoop"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "orange": ("orange",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "black": ("black",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big", "huge"),
}
# background kind (see data.synthetic) -> the adjective a sentence uses for it
BACKGROUND_WORDS: dict[str, str] = {
    "plain": "plain",
    "gradient": "shaded",
    "striped": "striped",
    "checkered": "checkered",
    "noisy": "mottled",
}

CONTENT_WORDS: frozenset[str] = frozenset(
    w for table in (SHAPE_WORDS, COLOUR_WORDS, SIZE_WORDS) for words in table.values() for w in words
)


def word_groups() -> dict[str, list[str]]:
    """The content words by kind, {"colour" | "shape" | "size": words}: for per-kind alignment accuracy."""
    return {kind: sorted(w for words in table.values() for w in words)
            for kind, table in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS), ("size", SIZE_WORDS))}

RELATION_WORDS = {
    "left": ("to the left of", "left of", "on the left of"),
    "right": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "near": ("next to", "beside", "near", "close to"),
}
POSITION_WORDS = {
    ("top", "left"): ("in the top left corner", "at the top left"),
    ("top", "right"): ("in the top right corner", "at the top right"),
    ("bottom", "left"): ("in the bottom left corner", "at the bottom left"),
    ("bottom", "right"): ("in the bottom right corner", "at the bottom right"),
    ("top", "middle"): ("at the top", "near the top"),
    ("bottom", "middle"): ("at the bottom", "near the bottom"),
    ("middle", "left"): ("on the left", "on the left side"),
    ("middle", "right"): ("on the right", "on the right side"),
    ("middle", "middle"): ("in the middle", "in the center", "in the centre"),
}
OPENERS_ONE = ("there is", "we can see", "this image shows", "the picture shows", "a picture of", "an image of",
               "here we have", "i see")
OPENERS_MANY = ("there are", "we can see", "this image shows", "the picture shows", "a picture of",
                "an image of", "here we have", "i see")
VERBS = ("is", "is", "sits", "lies")
COUNTS = {1: "one", 2: "two", 3: "three", 4: "four"}
THING = {1: ("shape", "object"), 2: ("shapes", "objects", "things")}


@dataclass
class ObjectView:
    """What the grammar needs to know about one object (a view of `data.synthetic.SceneObject`)."""

    id: int
    shape: str
    colour: str
    size: str  # "small" | "large"
    box: list[float]  # [x1, y1, x2, y2] px


@dataclass
class SentenceParse:
    """A generated sentence: raw text, its tokens, and phrase spans ``(start, end_exclusive, object id)``."""

    raw: str
    tokens: list[str]
    phrases: list[tuple[int, int, int]]


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def region_description(obj: ObjectView) -> str:
    """The canonical description of an object, e.g. "a small red circle" (ground truth for dense captioning)."""
    words = [obj.size, obj.colour, obj.shape]
    return " ".join([_article(words[0])] + words)


class _Builder:
    """Concatenates text parts; parts that name an object become phrases."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, int | None]] = []

    def add(self, text: str, obj: int | None = None) -> "_Builder":
        self.parts.append((text, obj))
        return self

    def build(self) -> SentenceParse:
        raw, tokens, phrases = "", [], []
        for text, obj in self.parts:
            if raw and text[0] not in ",:":
                raw += " "
            raw += text
            toks = tokenize(text)
            if obj is not None:
                phrases.append((len(tokens), len(tokens) + len(toks), obj))
            tokens += toks
        raw = raw[0].upper() + raw[1:] + "."
        assert tokenize(raw) == tokens, (raw, tokens)
        return SentenceParse(raw, tokens, phrases)


class _Grammar:
    """Sentence templates for one scene. `rng` is a numpy Generator; all choices go through it."""

    def __init__(self, objects: list[ObjectView], width: int, height: int, background: str, rng: np.random.Generator,
                 n_total: int):
        self.objs = objects  # the mentioned objects
        self.w, self.h = width, height
        self.background = background
        self.rng = rng
        self.n_total = n_total  # all objects in the scene, mentioned or not
        shapes = [o.shape for o in objects]
        self.unique_shape = {o.id: shapes.count(o.shape) == 1 for o in objects}

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    # --- noun phrases -------------------------------------------------------------------------------------
    def np_words(self, o: ObjectView, definite: bool | None = None) -> str:
        r = self.rng
        words = []
        if r.random() < 0.45:
            words.append(self.pick(SIZE_WORDS[o.size]))
        if r.random() < 0.9 or not self.unique_shape[o.id]:
            words.append(self.pick(COLOUR_WORDS[o.colour]))
        words.append(self.pick(SHAPE_WORDS[o.shape]))
        if definite is None:
            definite = r.random() < 0.3
        det = "the" if definite else _article(words[0])
        return " ".join([det] + words)

    def add_np(self, b: _Builder, o: ObjectView, definite: bool | None = None) -> None:
        b.add(self.np_words(o, definite), o.id)

    def add_list(self, b: _Builder, objs: list[ObjectView]) -> None:
        for k, o in enumerate(objs):
            if k > 0:
                b.add("and" if k == len(objs) - 1 else ",")
            self.add_np(b, o, definite=False)

    # --- geometry -----------------------------------------------------------------------------------------
    @staticmethod
    def centre(o: ObjectView) -> tuple[float, float]:
        x1, y1, x2, y2 = o.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    def relations(self, a: ObjectView, b: ObjectView) -> list[str]:
        """Relations of a to b that are clearly true in the picture."""
        (ax, ay), (bx, by) = self.centre(a), self.centre(b)
        dx, dy = bx - ax, by - ay
        out = []
        if abs(dx) > 0.12 * self.w and abs(dx) > 1.5 * abs(dy):
            out.append("left" if dx > 0 else "right")
        if abs(dy) > 0.12 * self.h and abs(dy) > 1.5 * abs(dx):
            out.append("above" if dy > 0 else "below")
        gap_x = max(a.box[0], b.box[0]) - min(a.box[2], b.box[2])
        gap_y = max(a.box[1], b.box[1]) - min(a.box[3], b.box[3])
        if max(gap_x, gap_y) < 0.1 * self.w:
            out.append("near")
        return out

    def position(self, o: ObjectView) -> str:
        x, y = self.centre(o)
        col = "left" if x < self.w * 0.36 else "right" if x > self.w * 0.64 else "middle"
        row = "top" if y < self.h * 0.36 else "bottom" if y > self.h * 0.64 else "middle"
        return self.pick(POSITION_WORDS[(row, col)])

    def subset(self, k_max: int) -> list[ObjectView]:
        k = int(self.rng.integers(1, min(k_max, len(self.objs)) + 1))
        idx = sorted(self.rng.choice(len(self.objs), size=k, replace=False).tolist())
        return [self.objs[i] for i in idx]

    def background_suffix(self, b: _Builder) -> None:
        if self.rng.random() < 0.2:
            b.add(self.pick(("on a", "in front of a")) + " " + BACKGROUND_WORDS[self.background] + " background")

    # --- templates ----------------------------------------------------------------------------------------
    def t_list(self, objs: list[ObjectView]) -> SentenceParse:
        b = _Builder()
        if self.rng.random() < 0.75:
            b.add(self.pick(OPENERS_ONE if len(objs) == 1 else OPENERS_MANY))
        self.add_list(b, objs)
        self.background_suffix(b)
        return b.build()

    def t_count(self) -> SentenceParse:
        n = len(self.objs)
        b = _Builder()
        thing = self.pick(THING[min(n, 2)])
        lead = ("", "there is only ", "we see ") if n == 1 else ("", "there are ", "i count ", "we see ")
        b.add(self.pick(lead) + f"{COUNTS[n]} {thing}:")
        self.add_list(b, self.objs)
        return b.build()

    def t_position(self, objs: list[ObjectView]) -> SentenceParse:
        b = _Builder()
        if len(objs) == 1 and self.rng.random() < 0.4:
            b.add(self.position(objs[0]) + " " + self.pick(("there is", "we can see", "you can see")))
            self.add_np(b, objs[0], definite=False)
            return b.build()
        verb = self.rng.random() < 0.5
        for k, o in enumerate(objs[:2]):
            if k > 0:
                b.add(self.pick(("and", "while")) if verb else "and")
            self.add_np(b, o)
            if verb:
                b.add(self.pick(("is", "sits", "appears")))
            b.add(self.position(o))
        return b.build()

    def t_relation(self, a: ObjectView, c: ObjectView, rel: str) -> SentenceParse:
        b = _Builder()
        words = self.pick(RELATION_WORDS[rel])
        form = int(self.rng.integers(3))
        if form == 0:  # "a red ball is left of the blue box"
            self.add_np(b, a)
            b.add(self.pick(VERBS) + " " + words)
            self.add_np(b, c)
        elif form == 1:  # "left of the blue box there is a red ball"
            b.add(words)
            self.add_np(b, c)
            b.add(self.pick(("there is", "is", "we see")))
            self.add_np(b, a, definite=False)
        else:  # "a blue box with a red ball left of it"
            self.add_np(b, c)
            b.add("with")
            self.add_np(b, a, definite=False)
            b.add(words + " it")
        return b.build()

    def random_sentence(self) -> SentenceParse:
        r = self.rng
        pairs = [(a, c, rel) for a in self.objs for c in self.objs if a.id != c.id for rel in self.relations(a, c)]
        u = r.random()
        if pairs and u < 0.4:
            return self.t_relation(*pairs[int(r.integers(len(pairs)))])
        if u < 0.65:
            return self.t_position(self.subset(2))
        if u < 0.75 and len(self.objs) == self.n_total:
            return self.t_count()
        return self.t_list(self.subset(3))

    def first_sentence(self) -> SentenceParse:
        """Mentions every mentioned object (so each of them appears in at least one sentence)."""
        order = list(self.objs)
        self.rng.shuffle(order)
        if len(self.objs) == self.n_total and self.rng.random() < 0.3:
            return self.t_count()
        return self.t_list(order)


def describe(objects: list[ObjectView], width: int, height: int, background: str, rng: np.random.Generator,
             n_sentences: int = 5, n_total: int | None = None) -> list[SentenceParse]:
    """`n_sentences` distinct sentences about the mentioned `objects` (the first mentions all of them).

    `n_total` is the number of objects in the scene including unmentioned ones (counts are said only when all
    objects are mentioned). Raises RuntimeError if the grammar cannot find enough distinct sentences.
    """
    if not objects:
        raise ValueError("a scene needs at least one mentioned object")
    g = _Grammar(objects, width, height, background, rng, len(objects) if n_total is None else n_total)
    out = [g.first_sentence()]
    seen = {out[0].raw}
    for _ in range(200 * n_sentences):
        if len(out) == n_sentences:
            return out
        s = g.random_sentence()
        if s.raw not in seen:
            seen.add(s.raw)
            out.append(s)
    raise RuntimeError(f"only {len(out)} distinct sentences for a scene of {len(objects)} object(s)")


def content_word_targets(record: ImageRecord, content_words: frozenset[str] = CONTENT_WORDS
                         ) -> list[tuple[int, int, str]]:
    """(sentence id, token index, region id) for every content word inside a phrase of `record`.

    The alignment evaluator checks, for each triple, whether the word's best region overlaps the box of region
    `region id`. Phrases linked to several regions give one triple per region.
    """
    tokens = {s.id: s.tokens for s in record.sentences}
    out = []
    for p in record.phrases:
        toks = tokens[p.sentence_id]
        for t in range(p.start, p.end):
            if toks[t] in content_words:
                out.extend((p.sentence_id, t, rid) for rid in p.region_ids)
    return out


def uncovered_content_words(record: ImageRecord, content_words: frozenset[str] = CONTENT_WORDS
                            ) -> list[tuple[int, int]]:
    """(sentence id, token index) of content words that no phrase covers (empty for synthetic scenes)."""
    covered = {(p.sentence_id, t) for p in record.phrases for t in range(p.start, p.end)}
    return [(s.id, t) for s in record.sentences for t, w in enumerate(s.tokens)
            if w in content_words and (s.id, t) not in covered]
