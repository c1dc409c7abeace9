"""Fault injection: every fault a user can make ends in one clear line, and nothing is lost or skipped silently.

Each test is named after its fault. Writes: a read-only output folder, an --out that is an existing file or
folder, a full disk mid-write. Checkpoints: missing, of the wrong kind, hollow, of an old format version, with a
config this dvsa does not know. Images: zero bytes, text named .jpg, truncated JPEG, too large; a rerun after
two are fixed retries them and counts them as recovered. Each through the library and through one `dvsa`
subcommand (one line on stderr, no traceback).

Tests run as root here, where chmod does not stop writes: the read-only cases patch os.access / the probe or
the write itself to raise OSError(EROFS) instead; the chmod variant runs only as a normal user.
"""
import dataclasses
import errno
import os
import struct
import types
import zlib

import numpy as np
import pytest
import torch
from dvsa.align.boxscore import BoxScoreConfig, load_box_scorer
from dvsa.align.boxscore_fit import fit_box_score_on_split
from dvsa.align.regions import RegionConfig, RegionEncoder, extract_features
from dvsa.align.snippets import write_snippets
from dvsa.align.train import load_alignment, train_alignment
from dvsa.data import io as dio
from dvsa.data.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from dvsa.data.errors import CheckpointError, DvsaError, OutputError
from dvsa.data.features import FeatureStore
from dvsa.data.records import ImageRecord
from dvsa.data.text import Vocabulary
from dvsa.generate.model import GenConfig
from dvsa.generate.pipeline import align_stages
from dvsa.generate.pipeline.config import PipelineConfig
from dvsa.generate.pipeline.runner import Runner
from dvsa.generate.train import load_generator, train_generator
from dvsa.scripts.cli import main as dvsa_main
from PIL import Image
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _cli(capsys, *argv) -> tuple[int, str]:
    """Run `dvsa ARGV` in this process: (exit code, the last line on stderr). The fault must be that one line,
    with no traceback (a command may have said what it is doing on lines before it)."""
    capsys.readouterr()
    rc = dvsa_main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, err
    return rc, lines[-1]


def _a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("not a folder\n")
    return f


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".dvsa-probe"))


# ---------------------------------------------------------------------------------------------- writes
def test_out_under_a_file_is_refused_before_work(tmp_path):  # ENOTDIR: the root-proof read-only case
    f = _a_file(tmp_path)
    with pytest.raises(OutputError, match=rf"{f}/run: cannot write: {f} is a file, not a folder"):
        dio.check_writable(f / "run", "dir")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        dio.check_writable(f / "sub" / "x.json", "file")


def test_out_that_is_an_existing_file_or_folder(tmp_path):
    f = _a_file(tmp_path)
    with pytest.raises(OutputError, match=rf"{f}: cannot write: is a file, not a folder"):
        dio.check_writable(f, "dir")
    with pytest.raises(OutputError, match=rf"{tmp_path}: cannot write: an existing folder, expected a file"):
        dio.check_writable(tmp_path, "file")
    assert dio.check_writable(tmp_path / "new" / "deeper", "dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert _leftovers(tmp_path) == []


def test_read_only_folder_by_os_access(tmp_path, monkeypatch):
    monkeypatch.setattr(dio.os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match=rf"{tmp_path}/out.json: cannot write: read-only folder"):
        dio.check_writable(tmp_path / "out.json")


def test_read_only_folder_by_probe_erofs(tmp_path, monkeypatch):
    def erofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(dio.tempfile, "mkstemp", erofs)
    with pytest.raises(OutputError, match="out: cannot write: read-only folder"):
        dio.check_writable(tmp_path / "out", "dir")
    with pytest.raises(OutputError, match=r"x.json: cannot write: read-only or not permitted"):
        dio.atomic_write_json(tmp_path / "x.json", {"a": 1})


@pytest.mark.skipif(ROOT, reason="chmod does not stop root from writing")
def test_read_only_folder_chmod(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="read-only folder"):
            dio.check_writable(ro / "out.json")
        with pytest.raises(OutputError, match="read-only or not permitted"):
            dio.atomic_write_text(ro / "out.json", "x")
    finally:
        ro.chmod(0o755)


def test_no_space_left_before_work(tmp_path, monkeypatch):
    monkeypatch.setattr(dio.shutil, "disk_usage", lambda p: types.SimpleNamespace(total=1, used=1, free=0))
    with pytest.raises(OutputError, match="out: cannot write: no space left"):
        dio.check_writable(tmp_path / "out", "dir")


def test_full_disk_mid_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    dio.atomic_write_json(path, {"old": True})
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"results.json: cannot write: no space left on the device") as e, \
            dio.atomic_open(path) as f:
        f.write('{"new": ')
        raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, DvsaError)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dio.os, "fsync", full)  # the flush to disk fails: also ours to report
    with pytest.raises(OutputError, match="no space left on the device"):
        dio.atomic_write_json(path, {"new": True})
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_full_disk_during_checkpoint_save_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"kind": "align", "model": {"w": torch.ones(2)}})
    before = path.read_bytes()
    real = dio.os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dio.os, "replace", full)
    with pytest.raises(OutputError, match="last.pt: cannot write: no space left on the device"):
        save_checkpoint(path, {"kind": "align", "model": {"w": torch.zeros(2)}})
    monkeypatch.setattr(dio.os, "replace", real)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_write_onto_an_existing_folder_or_under_a_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="taken: cannot write: an existing folder, expected a file"):
        dio.atomic_write_text(tmp_path / "taken", "x")
    f = _a_file(tmp_path)
    with pytest.raises(OutputError, match=rf"x.json: cannot write: {f} is a file, not a folder"):
        dio.atomic_write_text(f / "x.json", "x")
    assert _leftovers(tmp_path) == [] and os.listdir(tmp_path / "taken") == []


def test_entry_points_check_their_output_first(tmp_path):
    """Each writer after long work refuses an unwritable output before it reads any input (the inputs here
    do not even exist)."""
    bad_dir = _a_file(tmp_path) / "run"
    with pytest.raises(OutputError, match="is a file, not a folder"):
        train_alignment([], tmp_path / "no-store", bad_dir)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        train_generator(GenConfig(), tmp_path / "no-store", [], bad_dir)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        extract_features([], bad_dir, RegionConfig(pretrained=False, progress=False))
    with pytest.raises(OutputError, match="an existing folder, expected a file"):
        write_snippets(None, None, None, [], tmp_path)
    with pytest.raises(OutputError, match="an existing folder, expected a file"):
        fit_box_score_on_split(str(tmp_path / "no-store"), "synthetic", str(tmp_path), str(tmp_path),
                               BoxScoreConfig())
    with pytest.raises(OutputError, match="is a file, not a folder"):
        Runner(PipelineConfig(out=str(bad_dir)))


def test_cli_out_that_is_an_existing_folder(tmp_path, capsys):
    rc, line = _cli(capsys, "align", "boxscore", "--store", tmp_path / "no-store", "--dataset", "synthetic",
                    "--root", tmp_path, "--out", tmp_path)
    assert rc == 1
    assert line.startswith("dvsa align") and line.endswith(f": {tmp_path}: cannot write: an existing folder, expected a file")


def test_cli_out_that_is_an_existing_file(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    f = _a_file(tmp_path)
    rc, line = _cli(capsys, "features", "--dataset", "folder", "--root", images, "--out", f, "--no-pretrained",
                    "--quiet")
    assert rc == 1
    assert line.startswith("dvsa features") and line.endswith(f": {f}: cannot write: is a file, not a folder")


def test_cli_read_only_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dio.os, "access", lambda *a, **k: False)  # root writes through chmod 0o555
    rc, line = _cli(capsys, "align", "boxscore", "--store", tmp_path / "no-store", "--dataset", "synthetic",
                    "--root", tmp_path, "--out", tmp_path / "bs.pt")
    assert rc == 1 and line.endswith(f": {tmp_path}/bs.pt: cannot write: read-only folder")


def test_cli_full_disk(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dio.shutil, "disk_usage", lambda p: types.SimpleNamespace(total=1, used=1, free=0))
    rc, line = _cli(capsys, "align", "boxscore", "--store", tmp_path / "no-store", "--dataset", "synthetic",
                    "--root", tmp_path, "--out", tmp_path / "bs.pt")
    assert rc == 1 and line.endswith(f": {tmp_path}/bs.pt: cannot write: no space left (0 bytes free in {tmp_path})")


# ---------------------------------------------------------------------------------------------- checkpoints
VOCAB = Vocabulary(["dog", "cat"]).to_dict()


def _generator_payload():
    from dvsa.generate.model import CaptionModel

    cfg = GenConfig(hidden=8, embed=8, max_len=6, beam=2, dropout=0.0)
    m = CaptionModel(cfg, len(Vocabulary.from_dict(VOCAB)), 4)
    return {"kind": "generate", "config": dataclasses.asdict(cfg), "vocab": VOCAB, "model": m.state_dict(),
            "feat_dim": 4, "features": {}}


@pytest.fixture
def bad_checkpoints(tmp_path):
    """{fault: (path, the message's tail)} for a generator loader."""
    good = _generator_payload()
    p = {}
    p["missing"] = (tmp_path / "missing.pt", "checkpoint not found")
    save_checkpoint(tmp_path / "boxscore.pt", {"kind": "boxscore", "config": {}, "model": {}})
    p["wrong_kind"] = (tmp_path / "boxscore.pt", "a 'boxscore' checkpoint, expected 'generate'")
    save_checkpoint(tmp_path / "hollow.pt", {k: v for k, v in good.items() if k not in ("model", "config")})
    p["hollow"] = (tmp_path / "hollow.pt", "hollow checkpoint: missing keys ['model', 'config']")
    torch.save({**good, "format_version": 0}, tmp_path / "old.pt")
    p["old_format"] = (tmp_path / "old.pt", f"format version 0, this dvsa reads {FORMAT_VERSION}")
    save_checkpoint(tmp_path / "unknown_field.pt", {**good, "config": {**good["config"], "warp_drive": 9}})
    p["unknown_field"] = (tmp_path / "unknown_field.pt", "the config inside does not fit this dvsa")
    (tmp_path / "text.pt").write_text("hello\n")
    p["not_a_checkpoint"] = (tmp_path / "text.pt", "not a readable dvsa checkpoint")
    return p


@pytest.mark.parametrize("fault", ["missing", "wrong_kind", "hollow", "old_format", "unknown_field",
                                   "not_a_checkpoint"])
def test_bad_generator_checkpoint_library(bad_checkpoints, fault):
    path, tail = bad_checkpoints[fault]
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    assert str(e.value).startswith(f"{path}: ") and tail in str(e.value)
    assert isinstance(e.value, ValueError) and e.value.exit_code == 1 and "\n" not in str(e.value)


@pytest.mark.parametrize("fault", ["missing", "wrong_kind", "hollow", "old_format"])
def test_bad_generator_checkpoint_cli(bad_checkpoints, fault, tmp_path, capsys):
    path, tail = bad_checkpoints[fault]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    rc, line = _cli(capsys, "caption", "--checkpoint", path, "--images", tmp_path / "a.png", "--out",
                    tmp_path / "captions.json", "--quiet")
    assert rc == 1
    assert line.startswith("dvsa caption") and line.endswith(f": {path}: {tail}")


def test_hollow_or_wrong_kind_alignment_and_box_scorer_checkpoints(tmp_path):
    save_checkpoint(tmp_path / "g.pt", _generator_payload())
    with pytest.raises(CheckpointError, match="g.pt: a 'generate' checkpoint, expected 'align'"):
        load_alignment(tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="g.pt: a 'generate' checkpoint, expected 'boxscore'"):
        load_box_scorer(tmp_path / "g.pt")
    save_checkpoint(tmp_path / "a.pt", {"kind": "align", "vocab": VOCAB, "feat_dim": 4})
    with pytest.raises(CheckpointError, match=r"a.pt: hollow checkpoint: missing keys \['model', 'config'\]"):
        load_alignment(tmp_path / "a.pt")
    save_checkpoint(tmp_path / "b.pt", {"kind": "boxscore", "feature_dim": 4, "model": {}})
    with pytest.raises(CheckpointError, match=r"b.pt: hollow checkpoint: missing keys \['config'\]"):
        load_box_scorer(tmp_path / "b.pt")
    save_checkpoint(tmp_path / "c.pt", {"kind": "boxscore", "feature_dim": 4, "model": {}, "config": {"x": 1}})
    with pytest.raises(CheckpointError, match="c.pt: the config inside does not fit this dvsa"):
        load_box_scorer(tmp_path / "c.pt")
    save_checkpoint(tmp_path / "d.pt", {"kind": "align", "vocab": VOCAB, "feat_dim": 4, "model": {},
                                        "config": {"no_such_field": 1}})
    with pytest.raises(CheckpointError, match=r"d.pt: the config inside does not fit this dvsa .*no_such_field"):
        load_alignment(tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_alignment(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------- images
CFG = {"pretrained": False, "image_size": 64, "warp_size": 48, "ss_size": 48, "max_boxes": 3, "part_size": 2,
       "batch_size": 2, "progress": False, "workers": 0}


def _good(path, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (40, 56, 3), np.uint8)
    a[4:24, 6:30] = rng.integers(0, 255, 3)
    Image.fromarray(a).save(path)


def _huge_png(path, w=40000, h=40000):
    """A PNG whose header claims w x h pixels (a decompression bomb as far as the header goes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _faulty_images(folder):
    folder.mkdir(exist_ok=True)
    _good(folder / "ok1.png", 1)
    _good(folder / "ok2.png", 2)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("a caption file saved as .jpg\nsecond line\n")
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 56, 3), np.uint8)).save(folder / "full.jpg")
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "full.jpg").unlink()
    _huge_png(folder / "huge.png")
    names = ["ok1.png", "zero.jpg", "ok2.png", "text.jpg", "truncated.jpg", "huge.png"]
    return [ImageRecord(id=n.split(".")[0], path=str(folder / n)) for n in names]


REASONS = {"zero": "empty file (0 bytes)", "text": "not an image: the file holds text",
           "truncated": "corrupt or truncated", "huge": "too large"}


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return RegionEncoder(RegionConfig(**CFG))


def test_bad_images_go_to_failed_jsonl_with_reasons_and_recover_on_rerun(tmp_path, capsys, encoder):
    recs = _faulty_images(tmp_path / "img")
    cfg = RegionConfig(**CFG)
    store = extract_features(recs, tmp_path / "store", cfg, encoder=encoder)
    assert sorted(store.ids) == ["ok1", "ok2"]
    failed = {d["id"]: d for d in store.failed()}
    assert sorted(failed) == sorted(REASONS)
    for k, reason in REASONS.items():
        assert reason in failed[k]["reason"], failed[k]
        assert failed[k]["path"].endswith(os.path.basename({r.id: r.path for r in recs}[k]))
    err = capsys.readouterr().err
    assert "4 failed now" in err and "failed before" not in err

    # the user fixes two of them; the same command retries every failed image and counts the recovered ones
    _good(tmp_path / "img" / "zero.jpg", 4)
    _good(tmp_path / "img" / "text.jpg", 5)
    again = extract_features(recs, tmp_path / "store", cfg, encoder=encoder)
    err = capsys.readouterr().err
    assert "2 of 4 images that failed before were read this time" in err
    assert "2 already done" in err and "2 failed now" in err
    assert sorted(again.ids) == ["ok1", "ok2", "text", "zero"]
    assert sorted(d["id"] for d in again.failed()) == ["huge", "truncated"]  # rewritten, no repeats
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.endswith(".tmp")]

    # the recovered images hold the features a clean run gives them
    ref = extract_features([r for r in recs if r.id in ("zero", "text")], tmp_path / "ref", cfg, encoder=encoder)
    for i in ("zero", "text"):
        np.testing.assert_allclose(again.regions(i)[0], ref.regions(i)[0])
        np.testing.assert_allclose(again.regions(i)[1], ref.regions(i)[1], atol=1e-4)

    # a third run retries the two still broken, reads none, and changes nothing
    third = extract_features(recs, tmp_path / "store", cfg, encoder=encoder)
    assert "0 of 2 images that failed before were read this time" in capsys.readouterr().err
    assert len(third) == 4 and len(third.failed()) == 2


def test_retry_failed_false_skips_and_says_so(tmp_path, capsys):
    recs = _faulty_images(tmp_path / "img")
    cfg = RegionConfig(**CFG)
    extract_features(recs, tmp_path / "store", cfg)
    _good(tmp_path / "img" / "zero.jpg", 4)
    capsys.readouterr()
    store = extract_features(recs, tmp_path / "store", cfg, retry_failed=False)
    err = capsys.readouterr().err
    assert "4 failed before (not retried)" in err and "were read this time" not in err
    assert len(store) == 2 and len(store.failed()) == 4


def test_too_large_limit_is_a_region_config_field(tmp_path):
    _good(tmp_path / "a.png", 0)  # 56 x 40 = 2240 pixels
    cfg = RegionConfig(**{**CFG, "max_pixels": 2000})
    store = extract_features([ImageRecord(id="a", path=str(tmp_path / "a.png"))], tmp_path / "s", cfg)
    assert len(store) == 0
    assert "too large: 56x40 = 2240 pixels > max_pixels 2000" in store.failed()[0]["reason"]
    assert "max_pixels" not in store.meta["region_config"]  # a run-time field: not part of the recipe


def test_pipeline_features_stage_reports_recovered(tmp_path):
    recs = _faulty_images(tmp_path / "img")
    logged = []
    run = types.SimpleNamespace(cfg=types.SimpleNamespace(region={k: v for k, v in CFG.items()}, device="cpu"),
                                out=tmp_path / "run", _stores={}, train=recs[:4], val=recs[4:], eval=[],
                                log=logged.append)
    first = align_stages.features(run)
    assert first["n_failed"] == 4 and first["n_recovered"] == 0 and first["n_images"] == 2
    _good(tmp_path / "img" / "zero.jpg", 4)
    _good(tmp_path / "img" / "truncated.jpg", 6)
    logged.clear()
    second = align_stages.features(run)
    assert second["n_failed"] == 2 and second["n_recovered"] == 2 and second["n_images"] == 4
    assert "  2 of 4 images that failed before were read this time" in logged
    assert sorted(d["id"] for d in FeatureStore(run.out / "features").failed()) == ["huge", "text"]


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = dio.atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
