"""Word vectors for the alignment model's fixed embedding W_w (paper eq. 2: 300-d word2vec).

Two sources, one result (a float32 matrix whose row i is the vector of vocabulary word i):

    kv = load_word2vec("GoogleNews-vectors-negative300.bin", limit=500_000)    # binary or text format
    kv = train_word2vec(train_token_lists, VectorsConfig(dim=300))              # seeded, one worker
    W, coverage = vectors_for_vocab(kv, vocab)        # W float32 [V, D]; coverage {"found", "total", "fraction", ...}
    save_vectors("vectors.npy", W, vocab, coverage)   # + vectors.json (vocabulary, coverage, config)
    W, coverage = load_vectors("vectors.npy", vocab)  # rows re-ordered to `vocab`, by word
    summary = make_vectors("flickr8k", root, "vectors.npy", VectorsConfig(train=True))   # all of the above

Row conventions: PAD (id 0) is all zeros; START / END / UNK and words without a vector get seeded random
normal vectors (std `VectorsConfig.std`, by default the std of the vectors that were found, so unknown words
sit at the same scale as known ones). Coverage counts the vocabulary's real words (not the 4 specials); a word
is found under its own spelling, else Capitalized, else UPPER case (GoogleNews is case-sensitive).

Dimensions: V vocabulary size (with the 4 specials), D vector size (300 for GoogleNews).
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from dvsa.data.io import atomic_save_npy, atomic_write_json
from dvsa.data.progress import progress as progress_bar
from gensim.models import KeyedVectors, Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from .catalog import load_dataset
from .records import DataError, select_split
from .text import PAD_ID, SPECIALS, Vocabulary


@dataclass
class VectorsConfig:
    """Where word vectors come from. The only home of these defaults (`dvsa vectors` flags override them)."""

    word2vec: str | None = None  # a word2vec file (GoogleNews-vectors-negative300.bin or a .txt/.vec)
    binary: bool | None = None  # file format; None = guess from the name, then from the bytes
    limit: int | None = None  # read only the first `limit` vectors of the file (the most frequent words)
    train: bool = False  # train Word2Vec (CBOW) on the training sentences instead
    dim: int = 300  # trained vector size
    window: int = 5  # trained context window
    epochs: int = 10  # training passes (the corpora are small)
    w2v_min_count: int = 1  # Word2Vec's own count threshold (the vocabulary's min_count applies anyway)
    seed: int = 0  # Word2Vec seed and the seed of the random rows
    std: float | None = None  # std of random rows; None = std of the found vectors (0.1 if none found)
    min_count: int = 5  # vocabulary threshold over the training split (paper: 5)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def guess_binary(path: str | os.PathLike) -> bool:
    """True for the binary word2vec format: by name (``.bin``), else by looking for non-text bytes."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if ".bin" in suffixes:
        return True
    if ".txt" in suffixes or ".vec" in suffixes:
        return False
    with _open(path) as f:
        f.readline()  # header "<count> <dim>"
        head = f.read(4096)
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # a cut multi-byte character at the end is still text
    return False


def load_word2vec(path: str | os.PathLike, limit: int | None = None, binary: bool | None = None):
    """gensim KeyedVectors from a word2vec file (binary or text, optionally gzipped); DataError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "word2vec file not found")
    if binary is None:
        binary = guess_binary(path)
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, limit=limit)
    except (ValueError, EOFError, UnicodeDecodeError, IndexError, OSError) as e:
        kind = "binary" if binary else "text"
        raise DataError(path, f"not a readable word2vec {kind} file ({e.__class__.__name__}: {e})") from None


def _stable_hash(s: str) -> int:
    """Python's hash() changes between runs; gensim may hash words to seed vectors, so give it a fixed one."""
    return zlib.crc32(s.encode("utf-8"))


class _EpochBar(CallbackAny2Vec):
    """A progress bar over Word2Vec's epochs (gensim calls it at the end of each)."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, model):
        self.bar.update(1)


def train_word2vec(sentences: Iterable[list[str]], cfg: VectorsConfig | None = None, progress: bool = True):
    """Word2Vec (CBOW) KeyedVectors trained on tokenised sentences; seeded, one worker, hence reproducible.
    `progress`: a bar over the epochs (`dvsa.data.progress`)."""
    cfg = cfg or VectorsConfig(train=True)
    sentences = [list(s) for s in sentences if s]
    if not sentences:
        raise ValueError("no sentences to train word vectors on")
    bar = progress_bar(total=cfg.epochs, desc="word2vec", unit="epoch", enabled=progress)
    try:
        model = Word2Vec(sentences=sentences, vector_size=cfg.dim, window=cfg.window, min_count=cfg.w2v_min_count,
                         workers=1, seed=cfg.seed, epochs=cfg.epochs, hashfxn=_stable_hash,
                         callbacks=[_EpochBar(bar)])
    finally:
        bar.close()
    return model.wv


def _lookup(kv, word: str):
    for w in (word, word.capitalize(), word.upper()):
        if w in kv.key_to_index:
            return kv[w]
    return None


def vectors_for_vocab(kv, vocab: Vocabulary, seed: int = 0, std: float | None = None
                      ) -> tuple[np.ndarray, dict]:
    """(matrix float32 [V, D], {"found", "total", "fraction", "missing"}) for `vocab` from KeyedVectors `kv`.

    Row PAD_ID is zeros; specials and missing words are random normal (seeded by `seed`, std `std` or the std of
    the found vectors). `total` counts the vocabulary's words without the specials; `missing` lists the words
    that got a random row.
    """
    return _fill(vocab.itos, lambda w: _lookup(kv, w), int(kv.vector_size), seed, std)


def _fill(itos: list[str], get, dim: int, seed: int, std: float | None) -> tuple[np.ndarray, dict]:
    found_rows, found_vecs, missing = [], [], []
    for i, w in enumerate(itos):
        if w in SPECIALS:
            continue
        v = get(w)
        if v is None:
            missing.append(w)
        else:
            found_rows.append(i)
            found_vecs.append(np.asarray(v, np.float32))
    if std is None:
        std = float(np.std(np.stack(found_vecs))) if found_vecs else 0.1
    rng = np.random.default_rng(seed)
    mat = rng.normal(0.0, std, size=(len(itos), dim)).astype(np.float32)
    if found_rows:
        mat[found_rows] = np.stack(found_vecs)
    mat[PAD_ID] = 0.0
    total = sum(w not in SPECIALS for w in itos)
    coverage = {"found": len(found_rows), "total": total, "fraction": len(found_rows) / max(1, total),
                "missing": missing}
    return mat, coverage


def sidecar(path: str | os.PathLike) -> Path:
    """The JSON file that describes a vectors .npy: same name, .json suffix."""
    return Path(path).with_suffix(".json")


def save_vectors(path: str | os.PathLike, matrix: np.ndarray, vocab: Vocabulary, coverage: dict,
                 info: dict | None = None) -> None:
    """Write `matrix` to `path` (.npy) and its vocabulary, coverage and `info` to the sidecar .json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if matrix.shape[0] != len(vocab):
        raise ValueError(f"matrix has {matrix.shape[0]} rows for a vocabulary of {len(vocab)} words")
    atomic_save_npy(path, np.asarray(matrix, np.float32))
    meta = {"shape": list(matrix.shape), "coverage": coverage, "vocab": vocab.to_dict(), **(info or {})}
    atomic_write_json(sidecar(path), meta)


def load_vectors(path: str | os.PathLike, vocab: Vocabulary | None = None, seed: int = 0,
                 std: float | None = None) -> tuple[np.ndarray, dict]:
    """(matrix float32 [V, D], coverage) from a file written by `save_vectors`.

    With `vocab`, rows are taken by word from the saved vocabulary (words it lacks get random rows, as in
    `vectors_for_vocab`; coverage is then about `vocab`). Without, the saved matrix and coverage as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "vectors file not found")
    try:
        mat = np.load(path)
        meta = json.loads(sidecar(path).read_text())
        saved = Vocabulary.from_dict(meta["vocab"])
    except FileNotFoundError:
        raise DataError(sidecar(path), "the vectors' sidecar file (vocabulary) is missing") from None
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise DataError(path, f"not a vectors file written by save_vectors ({e})") from None
    if mat.ndim != 2 or mat.shape[0] != len(saved):
        raise DataError(path, f"matrix shape {list(mat.shape)} does not match its vocabulary of {len(saved)}")
    if vocab is None or vocab.itos == saved.itos:
        return mat.astype(np.float32), meta.get("coverage", {})
    # a word is found only if the saved file had a real vector for it, not one of its random rows
    real = set(saved.itos) - set(meta.get("coverage", {}).get("missing", [])) - set(SPECIALS)
    return _fill(vocab.itos, lambda w: mat[saved.stoi[w]] if w in saved.stoi and w in real else None,
                 mat.shape[1], seed, std)


def split_vocabulary(records, split: str = "train", min_count: int = 5, source: str = "records"
                     ) -> tuple[Vocabulary, list[list[str]]]:
    """(`Vocabulary.build` of the `split` sentences of `records` at `min_count`, those token lists); DataError
    naming `source` when the split has no sentences."""
    sentences = [s.tokens for r in select_split(records, split) for s in r.sentences]
    if not sentences:
        raise DataError(source, f"the {split} split has no sentences")
    return Vocabulary.build(sentences, min_count=min_count), sentences


def make_vectors(dataset: str, root: str | os.PathLike, out: str | os.PathLike, cfg: VectorsConfig | None = None,
                 split: str = "train") -> dict:
    """What ``dvsa vectors`` does: the vocabulary of a catalog dataset's `split` (`split_vocabulary`, at
    `cfg.min_count`), vectors for it from `cfg.word2vec` or trained on the split (`cfg.train`), written to `out`
    with `save_vectors` (info: config, dataset, root, split). DataError for bad input, before anything is
    written. Returns {"vocab", "matrix", "coverage", "sentences" (how many)}."""
    cfg = cfg or VectorsConfig()
    vocab, sentences = split_vocabulary(load_dataset(dataset, root), split, cfg.min_count, str(root))
    kv = train_word2vec(sentences, cfg) if cfg.train else load_word2vec(cfg.word2vec, cfg.limit, cfg.binary)
    mat, cov = vectors_for_vocab(kv, vocab, seed=cfg.seed, std=cfg.std)
    save_vectors(out, mat, vocab, cov, {"config": asdict(cfg), "dataset": dataset, "root": str(root), "split": split})
    return {"vocab": vocab, "matrix": mat, "coverage": cov, "sentences": len(sentences)}
