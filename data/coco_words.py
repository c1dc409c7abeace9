"""Caption words that name a COCO category: the "phrases" of the COCO grounding evaluation.

COCO captions have no phrase-to-box links, but its instance boxes have categories, and captions name them
("a man riding a motorbike"). `CATEGORY_WORDS` lists, for each of the 80 COCO detection categories, the
caption words that name it: the category name itself, common synonyms (man / woman / boy / girl / people /
skier / surfer ... for person; bike for bicycle; motorbike for motorcycle; plane / jet for airplane; tv /
television; computer for laptop; phone / cellphone for cell phone; sofa for couch; ...) and multi-word names
("hot dog", "teddy bear", "traffic light", "fire hydrant", "stop sign", "cell phone", "tennis racket", "wine
glass", "baseball bat"). `names()` adds the plurals (regular ones by rule, irregular ones from `IRREGULAR`).

`find_category_words(tokens, present)` finds them in a token list (`data.text.tokenize`), longest name first
and left to right without overlap ("teddy bear" is one teddy bear, not a bear; "hot dog" is not a dog),
keeping only the categories in `present` (those with an instance in the image): a word that names a category
absent from the image is not scored (it may be a colour, "orange", or a verb, "train"). `category_phrases(record)`
turns them into one `Phrase` per occurrence whose region ids are ALL the record's instances of that category
and whose `types` is ``[category]``; `with_category_phrases(records)` gives copies of COCO records with them.
Crowd boxes are not regions of the records unless the reader was asked for them (``crowd=False`` default), so
they are never ground truth here.
"""
from __future__ import annotations

import dataclasses

from dvsa.data.records import ImageRecord, Phrase

CATEGORY_WORDS: dict[str, list[str]] = {
    "person": ["person", "people", "man", "woman", "men", "women", "boy", "girl", "child", "kid", "guy", "lady",
               "player", "skier", "surfer", "skateboarder", "snowboarder", "batter", "catcher", "pitcher",
               "rider", "biker", "gentleman", "baby", "toddler", "adult", "teenager", "teen", "worker", "chef",
               "cook", "officer", "policeman", "soldier", "tourist", "crowd", "couple", "someone", "umpire",
               "athlete", "daughter", "son", "mother", "father", "mom", "dad", "friend", "student", "children"],
    "bicycle": ["bicycle", "bike", "cycle"],
    "car": ["car", "taxi", "cab", "suv", "sedan", "automobile"],
    "motorcycle": ["motorcycle", "motorbike", "motor bike", "scooter", "moped", "dirt bike"],
    "airplane": ["airplane", "plane", "aeroplane", "jet", "airliner", "aircraft", "jetliner"],
    "bus": ["bus"],
    "train": ["train", "locomotive", "subway"],
    "truck": ["truck", "pickup", "lorry"],
    "boat": ["boat", "ship", "sailboat", "canoe", "kayak", "yacht", "ferry"],
    "traffic light": ["traffic light", "traffic signal", "stoplight", "stop light"],
    "fire hydrant": ["fire hydrant", "hydrant"],
    "stop sign": ["stop sign"],
    "parking meter": ["parking meter", "meter"],
    "bench": ["bench"],
    "bird": ["bird", "pigeon", "seagull", "gull", "duck", "goose", "parrot", "crow", "swan"],
    "cat": ["cat", "kitten", "kitty"],
    "dog": ["dog", "puppy", "pup"],
    "horse": ["horse", "pony"],
    "sheep": ["sheep", "lamb"],
    "cow": ["cow", "cattle", "bull", "calf", "ox"],
    "elephant": ["elephant"],
    "bear": ["bear"],
    "zebra": ["zebra"],
    "giraffe": ["giraffe"],
    "backpack": ["backpack", "back pack", "rucksack"],
    "umbrella": ["umbrella", "parasol"],
    "handbag": ["handbag", "purse"],
    "tie": ["tie", "necktie"],
    "suitcase": ["suitcase", "luggage"],
    "frisbee": ["frisbee"],
    "skis": ["skis", "ski"],
    "snowboard": ["snowboard"],
    "sports ball": ["ball", "soccer ball", "tennis ball", "football", "basketball", "volleyball", "baseball ball"],
    "kite": ["kite"],
    "baseball bat": ["baseball bat", "bat"],
    "baseball glove": ["baseball glove", "glove", "mitt"],
    "skateboard": ["skateboard", "skate board"],
    "surfboard": ["surfboard", "surf board"],
    "tennis racket": ["tennis racket", "racket", "racquet", "tennis racquet"],
    "bottle": ["bottle"],
    "wine glass": ["wine glass", "glass"],
    "cup": ["cup", "mug"],
    "fork": ["fork"],
    "knife": ["knife"],
    "spoon": ["spoon"],
    "bowl": ["bowl"],
    "banana": ["banana"],
    "apple": ["apple"],
    "sandwich": ["sandwich", "burger", "hamburger"],
    "orange": ["orange"],
    "broccoli": ["broccoli"],
    "carrot": ["carrot"],
    "hot dog": ["hot dog", "hotdog"],
    "pizza": ["pizza"],
    "donut": ["donut", "doughnut"],
    "cake": ["cake", "cupcake"],
    "chair": ["chair"],
    "couch": ["couch", "sofa"],
    "potted plant": ["potted plant", "plant", "houseplant"],
    "bed": ["bed"],
    "dining table": ["dining table", "table"],
    "toilet": ["toilet"],
    "tv": ["tv", "television", "monitor"],
    "laptop": ["laptop", "computer"],
    "mouse": ["mouse"],
    "remote": ["remote", "remote control", "controller"],
    "keyboard": ["keyboard"],
    "cell phone": ["cell phone", "phone", "cellphone", "smartphone", "mobile phone"],
    "microwave": ["microwave"],
    "oven": ["oven", "stove"],
    "toaster": ["toaster"],
    "sink": ["sink"],
    "refrigerator": ["refrigerator", "fridge"],
    "book": ["book"],
    "clock": ["clock"],
    "vase": ["vase"],
    "scissors": ["scissors"],
    "teddy bear": ["teddy bear", "teddy", "stuffed animal"],
    "hair drier": ["hair drier", "hair dryer", "blow dryer"],
    "toothbrush": ["toothbrush", "tooth brush"],
}

# plural of a word (the last word of a multi-word name) where the rule in `plural` is wrong
IRREGULAR = {"man": "men", "woman": "women", "person": "people", "child": "children", "knife": "knives",
             "sheep": "sheep", "mouse": "mice", "calf": "calves", "goose": "geese", "ox": "oxen",
             "gentleman": "gentlemen", "policeman": "policemen", "people": "people", "men": "men",
             "women": "women", "children": "children", "skis": "skis", "scissors": "scissors", "cattle": "cattle",
             "luggage": "luggage", "broccoli": "broccoli", "crowd": "crowds", "someone": "someone"}


def plural(word: str) -> str:
    """English plural of one word: `IRREGULAR`, else -es after s/sh/ch/x/z, -ies after a consonant + y, else -s."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def names() -> dict[tuple[str, ...], str]:
    """Every name (a token tuple, singular and plural) -> its category."""
    out: dict[tuple[str, ...], str] = {}
    for cat, words in CATEGORY_WORDS.items():
        for w in words:
            toks = tuple(w.split())
            out.setdefault(toks, cat)
            out.setdefault(toks[:-1] + (plural(toks[-1]),), cat)
    return out


_NAMES = names()
_LONGEST = max(len(k) for k in _NAMES)


def find_category_words(tokens: list[str], present: set[str] | None = None) -> list[tuple[int, int, str]]:
    """[(start, end, category)] of the category names in `tokens` (end exclusive), longest first, left to
    right, no overlap; only categories in `present` (all when None)."""
    out, i = [], 0
    while i < len(tokens):
        for n in range(min(_LONGEST, len(tokens) - i), 0, -1):
            cat = _NAMES.get(tuple(tokens[i : i + n]))
            if cat is not None:
                if present is None or cat in present:
                    out.append((i, i + n, cat))
                i += n
                break
        else:
            i += 1
    return out


def category_phrases(record: ImageRecord) -> list[Phrase]:
    """One Phrase per category word of each sentence whose category has an instance (a region labelled with
    it) in `record`; region_ids: all those instances; types: [category]."""
    ids: dict[str, list[str]] = {}
    for r in record.regions:
        if r.label in CATEGORY_WORDS and r.id is not None:
            ids.setdefault(r.label, []).append(r.id)
    out = []
    for s in record.sentences:
        for start, end, cat in find_category_words(s.tokens, set(ids)):
            out.append(Phrase(sentence_id=s.id, start=start, end=end, text=" ".join(s.tokens[start:end]),
                              region_ids=list(ids[cat]), types=[cat]))
    return out


def is_coco_like(record: ImageRecord) -> bool:
    """A record without phrases whose regions carry COCO category labels."""
    return not record.phrases and any(r.label in CATEGORY_WORDS for r in record.regions)


def with_category_phrases(records: list[ImageRecord]) -> list[ImageRecord]:
    """Copies of the COCO-like records (`is_coco_like`) with `category_phrases`; other records unchanged."""
    return [dataclasses.replace(r, phrases=category_phrases(r)) if is_coco_like(r) else r for r in records]
