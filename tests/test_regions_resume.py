"""Resumability across a SIGKILLed run, and two gloo ranks writing one store equal to one process."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dvsa.data.features import FeatureStore
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, torch
torch.set_num_threads(1)
torch.manual_seed(0)
from dvsa.align.regions import RegionConfig, extract_features
from dvsa.data.records import ImageRecord
folder, out, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
recs = [ImageRecord(id=f"im{i}", path=f"{folder}/im{i}.png") for i in range(n)]
cfg = RegionConfig(pretrained=False, image_size=64, warp_size=48, ss_size=48, ss_mode="single", max_boxes=3, part_size=2,
                   batch_size=1, progress=False)
if delay:
    import time
    from dvsa.align.regions import encoder as E
    real = E.RegionEncoder.encode_batch
    def slow(self, items):
        time.sleep(delay)
        return real(self, items)
    E.RegionEncoder.encode_batch = slow
extract_features(recs, out, cfg)
"""


def _images(folder: Path, n: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.integers(0, 255, (40, 48, 3), np.uint8)
        a[4:24, 6:30] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(folder / f"im{i}.png")


def _run(args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], env=env, cwd=REPO, **kw)


def _same(a: FeatureStore, b: FeatureStore):
    assert sorted(a.ids) == sorted(b.ids)
    for i in a.ids:
        np.testing.assert_allclose(a.regions(i)[0], b.regions(i)[0])
        np.testing.assert_allclose(a.regions(i)[1], b.regions(i)[1], atol=1e-4)
        np.testing.assert_allclose(a.image_feature(i), b.image_feature(i), atol=1e-4)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    n = 10
    _images(tmp_path, n)
    killed = _run([tmp_path, tmp_path / "killed", n, 1.0])  # 1 s per image: killed after two parts of 2
    deadline = time.time() + 180
    while time.time() < deadline and len(list((tmp_path / "killed").glob("part-*"))) < 2:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    ref = _run([tmp_path, tmp_path / "ref", n, 0])
    partial = FeatureStore(tmp_path / "killed")
    assert 4 <= len(partial) < n  # whole parts only, no corrupt rows
    for i in partial.ids:
        assert np.isfinite(partial.regions(i)[1]).all()
    resume = _run([tmp_path, tmp_path / "killed", n, 0], stderr=subprocess.PIPE, text=True)
    _, err = resume.communicate(timeout=120)
    assert resume.returncode == 0
    assert f"encoded {n - len(partial)} images" in err and f"{len(partial)} already done" in err  # nothing redone
    assert ref.wait(timeout=120) == 0
    _same(FeatureStore(tmp_path / "ref"), FeatureStore(tmp_path / "killed"))


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path):
    n = 5
    _images(tmp_path, n)
    single = _run([tmp_path, tmp_path / "one", n, 0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = [
        _run([tmp_path, tmp_path / "two", n, 0], env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                                      "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"})
        for r in range(2)
    ]
    assert single.wait(timeout=120) == 0
    assert [p.wait(timeout=120) for p in ranks] == [0, 0]
    parts = sorted(p.name.split("-")[1] for p in (tmp_path / "two").glob("part-*"))
    assert set(parts) == {"r0", "r1"}
    _same(FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "two"))
