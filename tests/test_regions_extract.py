"""extract_features: a store per record, resume after an injected failure equals an uninterrupted run."""
import numpy as np
import pytest
import torch
from dvsa.align.regions import RegionConfig, RegionEncoder, extract_features
from dvsa.align.regions import encoder as encoder_mod
from dvsa.data.features import FeatureStore
from dvsa.data.records import ImageRecord
from PIL import Image
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)


def _images(tmp_path, n=6):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        a = rng.integers(0, 255, (48 + 4 * i, 64, 3), np.uint8)
        a[5:30, 8:40] = rng.integers(0, 255, 3)
        p = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(p)
        recs.append(ImageRecord(id=f"im{i}", path=str(p)))
    return recs


# workers=0: everything in this process, where the injected failures below can reach encode_batch
CFG = dict(pretrained=False, image_size=64, warp_size=48, ss_size=48, max_boxes=4, part_size=2, batch_size=2, progress=False,
           workers=0)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return RegionEncoder(RegionConfig(**CFG))


def _same(a: FeatureStore, b: FeatureStore):
    assert sorted(a.ids) == sorted(b.ids)
    for i in a.ids:
        ba, ra = a.regions(i)
        bb, rb = b.regions(i)
        np.testing.assert_allclose(ba, bb)
        np.testing.assert_allclose(ra, rb, atol=1e-4)
        np.testing.assert_allclose(a.image_feature(i), b.image_feature(i), atol=1e-4)
        assert a.image_size(i) == b.image_size(i)


def test_extract_and_resume_after_exception(tmp_path, encoder, monkeypatch):
    recs = _images(tmp_path)
    cfg = RegionConfig(**CFG)
    full = extract_features(recs, tmp_path / "full", cfg, encoder=encoder)
    assert len(full) == 6 and full.meta["dim"] == 1280 and full.meta["region_config"]["backend"] == "rcnn"
    assert full.image_size("im2") == (64, 56)

    calls = {"n": 0}
    real = encoder_mod.RegionEncoder.encode_batch

    def flaky(self, items):
        calls["n"] += 1
        if calls["n"] == 3:  # after 2 batches = 4 images = 2 parts
            raise RuntimeError("injected")
        return real(self, items)

    monkeypatch.setattr(encoder_mod.RegionEncoder, "encode_batch", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        extract_features(recs, tmp_path / "resumed", cfg, encoder=encoder)
    assert len(FeatureStore(tmp_path / "resumed")) == 4
    monkeypatch.setattr(encoder_mod.RegionEncoder, "encode_batch", real)
    seen = []
    monkeypatch.setattr(
        encoder_mod.RegionEncoder, "encode_batch", lambda self, items: seen.append(len(items)) or real(self, items)
    )
    resumed = extract_features(recs, tmp_path / "resumed", cfg, encoder=encoder)
    assert sum(seen) == 2  # only the two unfinished images were encoded again
    _same(full, resumed)


def test_fp16_store(tmp_path, encoder):
    recs = _images(tmp_path, 2)
    st = extract_features(recs, tmp_path / "h", RegionConfig(**{**CFG, "dtype": "float16"}), encoder=None)
    assert st.meta["dtype"] == "float16"
    assert st.regions("im0")[1].dtype == np.float32


def test_cnn_threads_leave_room_for_the_workers():
    from dvsa.align.regions.extract import cnn_threads

    assert [cnn_threads(2, w) for w in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert cnn_threads(16, 4) == 13 and cnn_threads(1, 0) == 1


def test_cnn_in_workers_equals_one_process(tmp_path, encoder):
    """Two worker processes that each decode, propose and encode whole batches give the store of one process;
    a corrupt image among them is reported and skipped."""
    recs = _images(tmp_path, 5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    recs.insert(2, ImageRecord(id="bad", path=str(bad)))
    one = extract_features(recs, tmp_path / "one", RegionConfig(**CFG), encoder=encoder)
    cfg = RegionConfig(**{**CFG, "workers": 2, "cnn_place": "workers"})
    two = extract_features(recs, tmp_path / "two", cfg, encoder=encoder)
    _same(one, two)
    assert [d["id"] for d in two.failed()] == ["bad"]


def test_resolve_workers():
    from dvsa.align.regions.extract import resolve_workers

    cpu = RegionConfig()
    assert resolve_workers(cpu, 2) == (2, True) and resolve_workers(cpu, 1) == (1, False)
    assert resolve_workers(RegionConfig(workers=1), 8) == (1, False)
    assert resolve_workers(RegionConfig(workers=3, cnn_place="main"), 8) == (3, False)
    assert resolve_workers(RegionConfig(workers=1, cnn_place="workers"), 8) == (1, True)
    assert resolve_workers(RegionConfig(device="cuda"), 16) == (15, False)
    with pytest.raises(ValueError, match="workers >= 1"):
        resolve_workers(RegionConfig(workers=0, cnn_place="workers"), 2)
    with pytest.raises(ValueError, match="GPU"):
        resolve_workers(RegionConfig(device="cuda", cnn_place="workers"), 2)
    with pytest.raises(ValueError, match="cnn_place"):
        RegionConfig(cnn_place="gpu")
