import json

import numpy as np
import pytest
from dvsa.data.features import FeatureStore, FeatureStoreWriter

D = 5


def _image(rng, r):
    w, h = int(rng.integers(10, 50)), int(rng.integers(10, 50))
    boxes = np.concatenate([[[0, 0, w, h]], rng.uniform(0, 10, (r - 1, 4)) + [0, 0, 10, 10]]).astype(np.float32)
    return boxes, rng.normal(size=(r, D)).astype(np.float32), rng.normal(size=D).astype(np.float32), (w, h)


def _data(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return {f"im{k}": _image(rng, int(rng.integers(1, 6))) for k in range(n)}


def _write(path, data, meta=None, part_size=3, close=True, **kw):
    w = FeatureStoreWriter(path, meta or {"dim": D, "producer": "test"}, part_size=part_size, **kw)
    for i, (b, r, f, s) in data.items():
        w.add(i, b, r, f, s)
    if close:
        w.close()
    return w


def test_round_trip(tmp_path):
    data = _data()
    _write(tmp_path / "s", data)
    store = FeatureStore(tmp_path / "s")
    assert len(list((tmp_path / "s").glob("part-*"))) == 3  # 7 images in parts of 3
    assert sorted(store.ids) == sorted(data) and len(store) == 7 and "im3" in store and "nope" not in store
    assert store.dim == D and store.meta == {"format": 1, "dim": D, "producer": "test", "dtype": "float32"}
    for i, (b, r, f, s) in data.items():
        gb, gr = store.regions(i)
        assert gb.dtype == gr.dtype == np.float32 and gr.shape == (len(b), D)
        np.testing.assert_array_equal(gb, b)
        np.testing.assert_array_equal(gr, r)
        np.testing.assert_array_equal(store.image_feature(i), f)
        assert store.image_size(i) == s
    with pytest.raises(KeyError, match="'nope' is not in the feature store"):
        store.regions("nope")
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        FeatureStore(tmp_path)


def test_float16(tmp_path):
    data = _data(4)
    _write(tmp_path / "s", data, meta={"dim": D, "dtype": "float16"})
    assert np.load(next((tmp_path / "s").glob("part-*")) / "regions.npy").dtype == np.float16
    store = FeatureStore(tmp_path / "s")
    assert store.meta["dtype"] == "float16"
    for i, (b, r, f, _) in data.items():
        gb, gr = store.regions(i)
        np.testing.assert_array_equal(gb, b)  # boxes stay float32
        assert gr.dtype == np.float32
        np.testing.assert_allclose(gr, r, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(store.image_feature(i), f, rtol=1e-3, atol=1e-3)


def test_resume_after_interrupted_writer(tmp_path):
    data = _data(5)
    path = tmp_path / "s"
    w = _write(path, data, part_size=2, close=False)  # "killed": 4 images committed, the 5th only buffered
    assert w.done("im4")
    # a part that was being written when the process died
    tmp = path / ".tmp-part-0-deadbeef"
    tmp.mkdir()
    (tmp / "boxes.npy").write_bytes(b"partial")
    store = FeatureStore(path)
    assert sorted(store.ids) == ["im0", "im1", "im2", "im3"]
    w2 = FeatureStoreWriter(path, {"dim": D, "producer": "test"}, part_size=2)
    assert not tmp.exists()  # leftovers removed
    todo = [i for i in data if not w2.done(i)]
    assert todo == ["im4"]
    for i in todo:
        w2.add(i, *data[i])
    w2.close()
    store = FeatureStore(path)
    assert sorted(store.ids) == sorted(data)
    np.testing.assert_array_equal(store.regions("im4")[1], data["im4"][1])


def test_other_writer_parts_in_progress_are_left_alone(tmp_path):
    """Concurrent writers (one per rank) must not delete each other's parts while they are being written."""
    path = tmp_path / "s"
    FeatureStoreWriter(path, {"dim": D}, tag="0")
    busy = path / ".tmp-part-0-0123456789ab"
    busy.mkdir()
    FeatureStoreWriter(path, {"dim": D}, tag="1")
    assert busy.exists()
    FeatureStoreWriter(path, {"dim": D}, tag="0")  # the same tag restarting: its leftovers go
    assert not busy.exists()


def test_meta_mismatch_refused_and_json_values_compare_equal(tmp_path):
    path = tmp_path / "s"
    meta = {"dim": D, "backbone": "efficientnet_lite0", "mean": (0.498, 0.498, 0.498)}
    _write(path, _data(2), meta=meta)
    FeatureStoreWriter(path, meta)  # the same settings (a tuple is stored as a JSON list): resumes
    FeatureStoreWriter(path, {**meta, "dtype": np.float32})  # a numpy dtype names the same setting
    with pytest.raises(ValueError, match="meta.json: the store was made with other settings"):
        FeatureStoreWriter(path, {**meta, "backbone": "resnet50"})
    with pytest.raises(ValueError, match="other settings"):
        FeatureStoreWriter(path, {**meta, "dim": D + 1})
    with pytest.raises(ValueError, match="other settings"):
        FeatureStoreWriter(path, {**meta, "dtype": "float16"})


def test_add_checks_shapes(tmp_path):
    w = FeatureStoreWriter(tmp_path / "s", {"dim": D})
    b, r, f, s = _data(1)["im0"]
    with pytest.raises(ValueError, match="image x: expected regions"):
        w.add("x", b, r[:, :-1], f, s)
    with pytest.raises(ValueError, match="image x: expected regions"):
        w.add("x", b, r, f[:-1], s)
    with pytest.raises(ValueError, match="image x: expected regions"):
        w.add("x", b[:-1] if len(b) > 1 else np.zeros((2, 4)), r, f, s)


def test_failed_images_are_recorded_once(tmp_path):
    path = tmp_path / "s"
    w = FeatureStoreWriter(path, {"dim": D})
    w.fail("bad", "/x/bad.jpg", "cannot identify image file")
    w.fail("bad", "/x/bad.jpg", "cannot identify image file")
    w.close()
    FeatureStoreWriter(path, {"dim": D}).fail("bad", "/x/bad.jpg", "again")
    assert FeatureStore(path).failed() == [{"id": "bad", "path": "/x/bad.jpg", "reason": "cannot identify image file"}]
    assert json.loads((path / "failed.jsonl").read_text().splitlines()[0])["id"] == "bad"


def _padded_slow(store, ids, max_regions=None):
    feats, boxes, masks = [], [], []
    r = max(len(store.regions(i)[0]) for i in ids)
    r = r if max_regions is None else min(r, max_regions)
    for i in ids:
        b, f = store.regions(i)
        k = min(len(b), r)
        fb = np.zeros((r, D), np.float32)
        bb = np.zeros((r, 4), np.float32)
        m = np.zeros(r, bool)
        fb[:k], bb[:k], m[:k] = f[:k], b[:k], True
        feats.append(fb), boxes.append(bb), masks.append(m)
    return np.stack(feats), np.stack(boxes), np.stack(masks)


@pytest.mark.parametrize("max_regions", [None, 2])
def test_padded_matches_slow_twin(tmp_path, max_regions):
    data = _data(9, seed=3)
    _write(tmp_path / "s", data, part_size=4)
    store = FeatureStore(tmp_path / "s")
    ids = ["im5", "im0", "im8", "im2"]
    feats, boxes, mask = store.padded(ids, max_regions=max_regions)
    want = _padded_slow(store, ids, max_regions)
    for got, exp in zip((feats, boxes, mask), want):
        assert got.dtype == exp.dtype and got.shape == exp.shape
        np.testing.assert_array_equal(got, exp)
    counts = [len(data[i][0]) for i in ids]
    assert mask.sum(1).tolist() == [min(c, max_regions or 99) for c in counts]
    assert not feats[~mask].any()
