"""Robust image loading and extraction over bad files: converted or reported and skipped, the rest finishes."""
import struct
import zlib

import numpy as np
import pytest
from dvsa.align.regions import RegionConfig, extract_features
from dvsa.align.regions.images import ImageError, load_rgb
from dvsa.data.records import ImageRecord
from PIL import Image
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)


def _png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels (a decompression bomb as far as the header goes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _bad_and_odd_files(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 56, 3), np.uint8)
    files = {}
    Image.fromarray(rgb).save(tmp_path / "ok.png")
    files["ok"] = "ok.png"
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    files["gray"] = "gray.png"
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    files["cmyk"] = "cmyk.jpg"
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    files["g16"] = "g16.png"
    rgba = np.concatenate([rgb, np.full((40, 56, 1), 128, np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    files["alpha"] = "alpha.png"
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.gif")
    files["palette"] = "palette.gif"
    Image.fromarray(rgb).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    files["truncated"] = "truncated.jpg"
    (tmp_path / "corrupt.jpg").write_bytes(b"this is not an image at all" * 10)
    files["corrupt"] = "corrupt.jpg"
    _png_header_only(tmp_path / "huge.png", 40000, 40000)
    files["huge"] = "huge.png"
    files["missing"] = "missing.jpg"
    return files


def test_load_rgb_converts_or_refuses(tmp_path):
    files = _bad_and_odd_files(tmp_path)
    for name in ["ok", "gray", "cmyk", "g16", "alpha", "palette"]:
        im = load_rgb(str(tmp_path / files[name]))
        assert im.mode == "RGB" and im.size == (56, 40), name
    ok = np.asarray(load_rgb(str(tmp_path / "ok.png")))
    g16 = np.asarray(load_rgb(str(tmp_path / "g16.png")))
    np.testing.assert_array_equal(g16[:, :, 0], ok[:, :, 0])  # 16-bit scaled back to 8 bits, not clipped
    alpha = np.asarray(load_rgb(str(tmp_path / "alpha.png"))).astype(int)
    np.testing.assert_allclose(alpha, (ok.astype(int) * 128 + 255 * 127) / 255, atol=1.01)  # over white
    for name in ["truncated", "corrupt", "huge", "missing"]:
        with pytest.raises(ImageError) as e:
            load_rgb(str(tmp_path / files[name]))
        assert files[name] in str(e.value)
    with pytest.raises(ImageError, match="too large"):
        load_rgb(str(tmp_path / "ok.png"), max_pixels=1000)


def test_extraction_skips_and_reports_bad_images(tmp_path, capsys):
    files = _bad_and_odd_files(tmp_path)
    recs = [ImageRecord(id=k, path=str(tmp_path / v)) for k, v in files.items()]
    cfg = RegionConfig(pretrained=False, image_size=64, warp_size=48, ss_size=48, max_boxes=3, batch_size=4,
                       progress=False)
    store = extract_features(recs, tmp_path / "store", cfg)
    assert sorted(store.ids) == sorted(["ok", "gray", "cmyk", "g16", "alpha", "palette"])
    failed = {f["id"]: f for f in store.failed()}
    assert sorted(failed) == ["corrupt", "huge", "missing", "truncated"]
    assert "too large" in failed["huge"]["reason"]
    err = capsys.readouterr().err
    assert "4 failed now" in err and "truncated.jpg" in err
    # running again neither redoes nor re-reports anything
    again = extract_features(recs, tmp_path / "store", cfg)
    assert len(again) == 6 and len(again.failed()) == 4
