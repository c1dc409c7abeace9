import json
import os
import subprocess
import sys

import numpy as np
import pytest
from dvsa.data.records import DataError
from dvsa.data.text import PAD_ID, UNK_ID, Vocabulary
from dvsa.data.vectors import (
    VectorsConfig,
    guess_binary,
    load_vectors,
    load_word2vec,
    save_vectors,
    train_word2vec,
    vectors_for_vocab,
)
from dvsa.scripts import cli
from dvsa.scripts.vectors import main
from fixtures.formats import karpathy_json, make_image

WORDS = ["dog", "Grass", "RUN", "a", "the", "ball", "über"]  # cased and non-ASCII entries, as in GoogleNews


def _kv(dim=6, seed=1):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(dim)
    kv.add_vectors(WORDS, np.random.default_rng(seed).normal(0, 0.2, (len(WORDS), dim)).astype(np.float32))
    return kv


@pytest.fixture
def w2v_files(tmp_path):
    kv = _kv()
    kv.save_word2vec_format(str(tmp_path / "vecs.bin"), binary=True)
    kv.save_word2vec_format(str(tmp_path / "vecs.txt"), binary=False)
    (tmp_path / "vecs.bin").rename(tmp_path / "vecs_binary")  # no telling suffix: sniffed from the bytes
    (tmp_path / "vecs.txt").rename(tmp_path / "vecs_text")
    return kv, tmp_path / "vecs_binary", tmp_path / "vecs_text"


def test_load_binary_and_text(w2v_files):
    kv, b, t = w2v_files
    assert guess_binary(b) and not guess_binary(t)
    for path in (b, t):
        got = load_word2vec(path)
        assert got.index_to_key == WORDS
        np.testing.assert_allclose(got.vectors, kv.vectors, atol=1e-6)
    assert load_word2vec(b, limit=3).index_to_key == WORDS[:3]
    assert load_word2vec(t, limit=2, binary=False).index_to_key == WORDS[:2]


def test_vectors_for_vocab(w2v_files):
    kv, b, _ = w2v_files
    vocab = Vocabulary(["dog", "grass", "run", "cat", "the", "uber"])
    mat, cov = vectors_for_vocab(load_word2vec(b), vocab, seed=3)
    assert mat.dtype == np.float32 and mat.shape == (len(vocab), 6)
    assert cov == {"found": 4, "total": 6, "fraction": 4 / 6, "missing": ["cat", "uber"]}
    np.testing.assert_array_equal(mat[PAD_ID], 0)
    np.testing.assert_allclose(mat[vocab.stoi["dog"]], kv["dog"], atol=1e-6)
    np.testing.assert_allclose(mat[vocab.stoi["grass"]], kv["Grass"], atol=1e-6)  # Capitalized fallback
    np.testing.assert_allclose(mat[vocab.stoi["run"]], kv["RUN"], atol=1e-6)  # UPPER fallback
    assert np.abs(mat[UNK_ID]).sum() > 0 and np.abs(mat[vocab.stoi["cat"]]).sum() > 0
    again, _ = vectors_for_vocab(load_word2vec(b), vocab, seed=3)
    np.testing.assert_array_equal(mat, again)  # seeded
    other, _ = vectors_for_vocab(load_word2vec(b), vocab, seed=4)
    assert not np.allclose(other[vocab.stoi["cat"]], mat[vocab.stoi["cat"]])
    np.testing.assert_array_equal(other[vocab.stoi["dog"]], mat[vocab.stoi["dog"]])
    # random rows at the scale of the found ones by default, or the std asked for
    found = mat[[vocab.stoi[w] for w in ("dog", "grass", "run", "the")]]
    small, _ = vectors_for_vocab(kv, Vocabulary(["x%d" % i for i in range(400)] + ["dog"]), std=0.01)
    assert abs(small[4:-1].std() - 0.01) < 0.001
    big, _ = vectors_for_vocab(kv, Vocabulary(["x%d" % i for i in range(400)] + list(WORDS)))
    assert abs(big[4:404].std() - kv.vectors.std()) < 0.1 * kv.vectors.std()
    # the default std is that of the found rows: the same seeded draw as std=1, scaled by it
    unit, _ = vectors_for_vocab(load_word2vec(b), vocab, seed=3, std=1.0)
    for w in ("cat", "uber"):
        np.testing.assert_allclose(mat[vocab.stoi[w]], unit[vocab.stoi[w]] * found.std(), rtol=1e-4)


def test_bad_word2vec_files(tmp_path):
    with pytest.raises(DataError, match="word2vec file not found"):
        load_word2vec(tmp_path / "none.bin")
    bad = tmp_path / "bad.txt"
    bad.write_text("3 4\ndog 0.1 0.2 0.3 0.4\ncat 0.1 oops 0.3 0.4\n")
    with pytest.raises(DataError, match=r"bad.txt: not a readable word2vec text file"):
        load_word2vec(bad)
    cut = tmp_path / "cut.bin"
    _kv().save_word2vec_format(str(cut), binary=True)
    cut.write_bytes(cut.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut.bin: not a readable word2vec binary file"):
        load_word2vec(cut)


SENTS = [["a", "dog", "runs", "on", "grass"], ["a", "cat", "sleeps"], ["the", "dog", "plays", "with", "a", "ball"]] * 5


def test_train_word2vec_is_reproducible():
    cfg = VectorsConfig(train=True, dim=8, epochs=2, seed=5)
    a, b = train_word2vec(SENTS, cfg), train_word2vec(SENTS, cfg)
    assert a.vector_size == 8 and set(a.index_to_key) == {w for s in SENTS for w in s}
    np.testing.assert_array_equal(a.vectors, b.vectors)
    c = train_word2vec(SENTS, VectorsConfig(train=True, dim=8, epochs=2, seed=6))
    assert not np.allclose(a.vectors, c.vectors)
    # also in a fresh interpreter with another string-hash seed
    code = ("import sys, numpy as np; sys.path.insert(0, 'tests'); from test_vectors import SENTS; "
            "from data.vectors import VectorsConfig, train_word2vec; "
            "kv = train_word2vec(SENTS, VectorsConfig(train=True, dim=8, epochs=2, seed=5)); "
            "np.save(sys.argv[1], kv.vectors)")
    out = os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", f"w2v_{os.getpid()}.npy")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", code, out], check=True, env=env,
                   cwd=os.path.join(os.path.dirname(__file__), ".."))
    np.testing.assert_array_equal(np.load(out), a.vectors)
    os.remove(out)
    with pytest.raises(ValueError, match="no sentences"):
        train_word2vec([[]], cfg)


def test_save_and_load_vectors_remap(tmp_path):
    kv = _kv()
    vocab = Vocabulary(["dog", "cat", "the"])
    mat, cov = vectors_for_vocab(kv, vocab)
    save_vectors(tmp_path / "v.npy", mat, vocab, cov, {"note": "x"})
    same, cov2 = load_vectors(tmp_path / "v.npy", vocab)
    np.testing.assert_array_equal(same, mat)
    assert cov2["found"] == 2 and json.loads((tmp_path / "v.json").read_text())["note"] == "x"
    other = Vocabulary(["the", "ball", "cat"])  # other order; 'ball' unknown to the file; 'cat' was random there
    got, cov3 = load_vectors(tmp_path / "v.npy", other)
    np.testing.assert_array_equal(got[other.stoi["the"]], mat[vocab.stoi["the"]])
    assert cov3["found"] == 1 and cov3["missing"] == ["ball", "cat"]
    np.testing.assert_array_equal(got[PAD_ID], 0)
    os.remove(tmp_path / "v.json")
    with pytest.raises(DataError, match="sidecar"):
        load_vectors(tmp_path / "v.npy", vocab)


def _dataset(tmp_path):
    data = karpathy_json([(f"im{k}", "train") for k in range(4)] + [("v0", "val")])
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_toy.json").write_text(json.dumps(data))
    make_image(tmp_path / "ds" / "images" / "im0.jpg")
    return tmp_path / "ds"


def test_cli_word2vec_and_train(tmp_path, w2v_files, capsys):

    _, b, t = w2v_files
    root = _dataset(tmp_path)
    out = tmp_path / "out" / "vectors.npy"
    assert main(["--dataset", "karpathy", "--root", str(root), "--word2vec", str(t), "--text",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    vocab = Vocabulary.from_dict(meta["vocab"])
    # captions "<image name> <caption>": 'im0' is seen 5 times in train (kept), 'v0' only in val (not kept)
    assert "dog" in vocab and "im0" in vocab and "v0" not in vocab
    assert meta["config"]["word2vec"] == str(t) and meta["config"]["binary"] is False
    mat = np.load(out)
    assert mat.shape == (len(vocab), 6)
    cov = meta["coverage"]
    assert f"coverage: {cov['found']}/{cov['total']} words" in printed
    assert cov["found"] == sum(w in ("dog", "grass", "run", "a", "the") for w in vocab.itos)
    assert main(["--dataset", "karpathy", "--root", str(root), "--train", "--dim", "5", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert np.load(out).shape == (len(vocab), 5)
    assert "100.0%" in capsys.readouterr().out
    assert cli.main(["vectors", "--dataset", "karpathy", "--root", str(root), "--word2vec",
                     str(tmp_path / "no.bin"), "--out", str(out)]) == 1
    assert "no.bin: word2vec file not found" in capsys.readouterr().err
