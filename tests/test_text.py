import json
import random

import pytest
from dvsa.data.records import ImageRecord, Sentence, select_split
from dvsa.data.text import (
    END_ID,
    PAD_ID,
    SPECIALS,
    START_ID,
    UNK,
    UNK_ID,
    Vocabulary,
    tokenize,
)


@pytest.mark.parametrize("raw, tokens", [
    ("A dog, running!", ["a", "dog", "running"]),
    ("A man in a t-shirt .", ["a", "man", "in", "a", "t", "shirt"]),
    ("Two   DOGS\tplay 2 games...", ["two", "dogs", "play", "2", "games"]),
    ("dog's ball", ["dog", "s", "ball"]),
    ("  ", []),
    ("?!.", []),
])
def test_tokenize(raw, tokens):
    assert tokenize(raw) == tokens


def test_special_ids():
    v = Vocabulary(["dog"])
    assert v.itos[:4] == list(SPECIALS) and (PAD_ID, START_ID, END_ID, UNK_ID) == (0, 1, 2, 3)
    assert v.stoi["dog"] == 4 and len(v) == 5 and "dog" in v and "cat" not in v


def test_build_min_count_and_order():
    sents = [["dog"]] * 7 + [["cat"]] * 5 + [["emu"]] * 4 + [["ant", "bee"]] * 5
    v = Vocabulary.build(sents, min_count=5)
    assert v.itos[4:] == ["dog", "ant", "bee", "cat"]  # by count, ties alphabetical; 'emu' (4 times) dropped
    assert v.counts == {"dog": 7, "ant": 5, "bee": 5, "cat": 5} and v.min_count == 5
    assert Vocabulary.build(sents, min_count=4).itos[-1] == "emu"
    # a generator works as well as a list
    assert Vocabulary.build((s for s in sents), min_count=5).itos == v.itos


def test_build_matches_slow_count():
    rng = random.Random(0)
    words = [f"w{k}" for k in range(40)]
    sents = [[rng.choice(words[: rng.randint(1, 40)]) for _ in range(rng.randint(1, 9))] for _ in range(300)]
    v = Vocabulary.build(sents, min_count=5)
    slow = {w: sum(s.count(w) for s in sents) for w in words}
    assert set(v.itos[4:]) == {w for w, n in slow.items() if n >= 5}
    assert all(slow[a] >= slow[b] for a, b in zip(v.itos[4:], v.itos[5:]))


def test_vocabulary_from_train_split_only():
    def rec(i, split, caption):
        return ImageRecord(id=i, path=f"{i}.jpg", split=split,
                           sentences=[Sentence(id=k, raw=caption, tokens=tokenize(caption)) for k in range(5)])

    records = [rec("a", "train", "a dog runs"), rec("b", "restval", "a cat sleeps"), rec("c", "val", "a zebra"),
               rec("d", "test", "an okapi")]
    train = select_split(records, "train")
    v = Vocabulary.build([s.tokens for r in train for s in r.sentences])
    assert {"a", "dog", "runs", "cat", "sleeps"} <= set(v.itos)
    assert "zebra" not in v and "okapi" not in v


def test_encode_decode_round_trip():
    v = Vocabulary(["a", "dog", "runs"])
    toks = ["a", "dog", "flies"]
    ids = v.encode(toks, add_start=True, add_end=True)
    assert ids == [START_ID, 4, 5, UNK_ID, END_ID]
    assert v.encode(toks) == [4, 5, UNK_ID]
    assert v.decode(ids) == ["a", "dog", UNK]
    assert v.decode(ids + [PAD_ID, PAD_ID]) == ["a", "dog", UNK]
    assert v.decode([4, END_ID, 5]) == ["a"]  # stops at END
    assert v.decode(ids, strip=False) == ["<start>", "a", "dog", UNK, "<end>"]
    import numpy as np
    import torch

    assert v.decode(torch.tensor(ids)) == v.decode(np.array(ids)) == ["a", "dog", UNK]
    known = ["a", "dog", "runs"]
    assert v.decode(v.encode(known)) == known
    assert v.known_fraction(toks) == pytest.approx(2 / 3) and v.known_fraction([]) == 0.0


def test_to_dict_round_trip_through_json():
    v = Vocabulary.build([["dog", "cat"]] * 5 + [["dog"]], min_count=5)
    d = json.loads(json.dumps(v.to_dict()))
    w = Vocabulary.from_dict(d)
    assert w.itos == v.itos and w.stoi == v.stoi and w.counts == v.counts and w.min_count == 5
    assert w.encode(["dog", "cat", "x"]) == v.encode(["dog", "cat", "x"])
