"""Tokenizer and vocabulary, as in the paper: lowercase, drop non-alphanumerics, keep words seen >= 5 times
in the training split only. Index 0 is padding, 1 START, 2 END, 3 UNK.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = 0, 1, 2, 3

_NON_ALNUM = re.compile(r"[^a-z0-9 ]+")


def tokenize(raw: str) -> list[str]:
    """'A dog, running!' -> ['a', 'dog', 'running']. Non-alphanumerics become spaces (so "t-shirt" -> t, shirt)."""
    return _NON_ALNUM.sub(" ", raw.lower()).split()


class Vocabulary:
    """Word <-> index map. Serialises to a JSON-able dict so checkpoints carry it (`to_dict` / `from_dict`)."""

    def __init__(self, words: Iterable[str], counts: dict[str, int] | None = None, min_count: int = 5):
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.counts: dict[str, int] = dict(counts or {})
        self.min_count = min_count

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_count: int = 5) -> "Vocabulary":
        """Build from tokenised *training* sentences; words seen >= min_count times, most frequent first."""
        c = Counter(w for toks in sentences for w in toks)
        words = sorted((w for w, n in c.items() if n >= min_count), key=lambda w: (-c[w], w))
        # Counts of kept words only; consumers that need END's frequency use the number of sentences.
        counts = {w: c[w] for w in words}
        return cls(words, counts, min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, w: str) -> bool:
        return w in self.stoi

    def encode(self, tokens: list[str], add_start: bool = False, add_end: bool = False) -> list[int]:
        ids = [self.stoi.get(t, UNK_ID) for t in tokens]
        return ([START_ID] if add_start else []) + ids + ([END_ID] if add_end else [])

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if strip and i == END_ID:
                break
            if strip and i in (PAD_ID, START_ID):
                continue
            out.append(self.itos[i])
        return out

    def known_fraction(self, tokens: list[str]) -> float:
        return sum(t in self.stoi for t in tokens) / max(1, len(tokens))

    def to_dict(self) -> dict:
        return {"itos": self.itos, "counts": self.counts, "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        return cls(d["itos"], d.get("counts", {}), d.get("min_count", 5))
