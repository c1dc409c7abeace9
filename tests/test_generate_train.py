"""Training the generator on a learnable toy: the feature determines the caption."""
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import DataError, ImageRecord, Sentence
from dvsa.generate.decode import greedy
from dvsa.generate.inputs import full_frame_features, input_features
from dvsa.generate.model import GenConfig
from dvsa.generate.train import load_generator, lr_at, train_generator

torch.set_num_threads(1)
COLORS, SHAPES, D = ["red", "green", "blue"], ["circle", "square"], 8


def caption(c, s):
    return ["a", COLORS[c], SHAPES[s], "on", "the", "grass"] if s == 0 else ["there", "is", "a", COLORS[c], SHAPES[s]]


def make_toy(tmp, n=60, seed=0):
    """Store with random-ish features where dims c and 3+s encode colour and shape; row 1 is a 'region' whose
    feature encodes another object (colour c2, shape s2). Records: 2 identical sentences per image."""
    rng = np.random.default_rng(seed)
    recs, objs = [], {}
    w = FeatureStoreWriter(tmp / "store", {"dim": D, "producer": "test"}, part_size=32)
    for i in range(n):
        c, s, c2, s2 = rng.integers(3), rng.integers(2), rng.integers(3), rng.integers(2)
        f = rng.normal(0, 0.1, D).astype(np.float32)
        f[c] += 1
        f[3 + s] += 1
        g = rng.normal(0, 0.1, D).astype(np.float32)
        g[c2] += 1
        g[3 + s2] += 1
        w.add(str(i), [[0, 0, 10, 10], [1, 1, 5, 5]], np.stack([f, g]), f, (10, 10))
        toks = caption(c, s)
        recs.append(ImageRecord(id=str(i), path=f"{i}.png", split="train" if i < 48 else "val",
                                sentences=[Sentence(i * 5 + k, " ".join(toks), toks) for k in range(2)]))
        objs[str(i)] = (c2, s2)
    w.close()
    return recs, FeatureStore(tmp / "store"), objs


def small(**kw):
    base = dict(hidden=32, embed=16, min_count=1, batch_size=16, lr=0.01, dropout=0.0, patience=0, val_images=20,
                epochs=15)
    return GenConfig(**{**base, **kw})


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_training_learns_the_toy_captions(tmp_path, cell):
    recs, store, _ = make_toy(tmp_path)
    ckpt = train_generator(small(cell=cell), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    model, vocab, cfg, ck = load_generator(ckpt)
    val = [r for r in recs if r.split == "val"]
    hyps = greedy(model, full_frame_features(store, [r.id for r in val]), 10)
    right = sum(vocab.decode(t) == r.sentences[0].tokens for (t, _), r in zip(hyps, val))
    assert right >= len(val) - 1, [" ".join(vocab.decode(t)) for t, _ in hyps]
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert hist[-1]["loss"] < 0.3 * hist[0]["loss"]
    assert max(h["val_cider"] for h in hist) > 5.0
    assert ck["features"] == store.meta and ck["kind"] == "generate" and cfg.cell == cell
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cell"] == cell


def test_untrained_model_does_not_know_the_toy(tmp_path):
    """The learning test above can fail: with no epoch of training the captions are wrong."""
    recs, store, _ = make_toy(tmp_path)
    ckpt = train_generator(small(epochs=0), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    model, vocab, _, ck = load_generator(ckpt)  # epochs=0 saves the initial model
    assert ck["epoch"] == 0
    val = [r for r in recs if r.split == "val"]
    hyps = greedy(model, full_frame_features(store, [r.id for r in val]), 10)
    assert sum(vocab.decode(t) == r.sentences[0].tokens for (t, _), r in zip(hyps, val)) <= 1


def test_resume_is_exact(tmp_path):
    recs, store, _ = make_toy(tmp_path)
    cfg = small(dropout=0.3, epochs=3, val_images=8, schedule="step", lr_step=1)
    quiet = dict(progress=False, log=lambda *a: None)
    train_generator(cfg, store, recs, tmp_path / "straight", **quiet)
    train_generator(small(dropout=0.3, epochs=2, val_images=8, schedule="step", lr_step=1), store, recs,
                    tmp_path / "resumed", **quiet)
    train_generator(cfg, store, recs, tmp_path / "resumed", **quiet)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and "val_cider" in a["history"][-1]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, st in a["optimizer"]["state"].items():
        assert torch.equal(st["square_avg"], b["optimizer"]["state"][k]["square_avg"])
    assert a["history"] == [{**h, "seconds": a["history"][i]["seconds"]} for i, h in enumerate(b["history"])]
    with pytest.raises(ValueError, match="other settings"):
        train_generator(small(hidden=8, epochs=4), store, recs, tmp_path / "resumed", **quiet)


def _ddp_worker(rank, world, port, tmp, cfg, recs):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        train_generator(cfg, FeatureStore(tmp / "store"), recs, tmp / "ddp", progress=False, log=lambda *a: None)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    recs, store, _ = make_toy(tmp_path)
    cfg = small(epochs=1, batch_size=10, val_images=0, clip_mode="norm")
    train_generator(cfg, store, recs, tmp_path / "single", progress=False, log=lambda *a: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, tmp_path, cfg, recs), nprocs=2, join=True, start_method="fork")
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 10
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5), k
    assert abs(a["history"][0]["loss"] - b["history"][0]["loss"]) < 1e-5


def write_snippets(path, recs, objs, extra=()):
    lines = []
    for r in recs:
        c2, s2 = objs[r.id]
        lines.append({"image_id": r.id, "sentence_id": r.sentences[0].id, "start": 0, "end": 2,
                      "text": f"{COLORS[c2]} {SHAPES[s2]}", "region": 1, "box": [1, 1, 5, 5], "score": 1.0})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n" + "".join(extra))


@pytest.mark.parametrize("mode", ["region", "region+image"])
def test_training_on_region_snippets(tmp_path, mode):
    recs, store, objs = make_toy(tmp_path)
    snip = tmp_path / "snippets.jsonl"
    write_snippets(snip, recs, objs)
    ckpt = train_generator(small(input=mode, epochs=25), store, snip, tmp_path / "run", records=recs,
                           progress=False, log=lambda *a: None)
    model, vocab, cfg, ck = load_generator(ckpt)
    assert model.input_dim == (2 * D if mode == "region+image" else D) and ck["data"] == "snippets"
    val = [r for r in recs if r.split == "val"]
    feats = np.concatenate([input_features(store, r.id, [1], mode) for r in val])
    hyps = greedy(model, feats, 6)
    right = sum(" ".join(vocab.decode(t)) == f"{COLORS[objs[r.id][0]]} {SHAPES[objs[r.id][1]]}"
                for (t, _), r in zip(hyps, val))
    assert right >= len(val) - 2
    assert "grass" in vocab  # the vocabulary comes from the training sentences


def test_bad_snippets_name_the_line(tmp_path):
    recs, store, objs = make_toy(tmp_path, n=10)
    snip = tmp_path / "bad.jsonl"
    write_snippets(snip, recs, objs, extra=['{"image_id": "1", "text": "x"}\n'])
    with pytest.raises(DataError, match=r"bad.jsonl:11: .*lacks"):
        train_generator(small(input="region"), store, snip, tmp_path / "run", records=recs, progress=False)
    write_snippets(snip, recs, objs, extra=["{not json\n"])
    with pytest.raises(DataError, match=r"bad.jsonl:11: not JSON"):
        train_generator(small(input="region"), store, snip, tmp_path / "run", records=recs, progress=False)
    rows = json.dumps({"image_id": "3", "sentence_id": 0, "start": 0, "end": 1, "text": "red", "region": 7,
                       "box": [0, 0, 1, 1], "score": 0.0})
    write_snippets(snip, recs, objs, extra=[rows + "\n"])
    with pytest.raises(DataError, match=r"bad.jsonl:11: .*2 regions"):
        train_generator(small(input="region"), store, snip, tmp_path / "run", records=recs, progress=False)


def test_learning_rate_schedules():
    assert lr_at(GenConfig(lr=1.0), 7) == 1.0
    assert lr_at(GenConfig(lr=1.0, schedule="step", lr_step=2, lr_gamma=0.5), 5) == 0.25
    cos = GenConfig(lr=1.0, schedule="cosine", epochs=10)
    assert lr_at(cos, 0) == 1.0 and lr_at(cos, 5) == pytest.approx(0.5) and lr_at(cos, 10) == pytest.approx(0.0)


def test_generate_train_command(tmp_path, capsys):
    from dvsa.data.catalog import load_dataset
    from dvsa.data.synthetic import write_synthetic
    from dvsa.scripts.generate_train import main

    root = write_synthetic(tmp_path / "syn", n_train=12, n_val=4, n_test=2, seed=0)
    recs = load_dataset("synthetic", str(root))
    rng = np.random.default_rng(0)
    with FeatureStoreWriter(tmp_path / "store", {"dim": D, "producer": "test"}) as w:
        for r in recs:
            f = rng.random((2, D), dtype=np.float32)
            w.add(r.id, [[0, 0, 4, 4], [1, 1, 2, 2]], f, f[0], (4, 4))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"hidden": 24, "embed": 8}))
    args = ["--store", str(tmp_path / "store"), "--dataset", "synthetic", "--root", str(root), "--out",
            str(tmp_path / "run"), "--config", str(cfg), "--set", "gen.hidden=16", "--set", "gen.epochs=2",
            "--set", "gen.min_count=1", "--set", "gen.cell=lstm", "--set", "gen.amp=false", "--quiet",
            "--set", "gen.val_images=4"]
    assert main(args) == 0
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (resolved["hidden"], resolved["embed"], resolved["cell"], resolved["amp"]) == (16, 8, "lstm", False)
    model, vocab, cfg_, ck = load_generator(tmp_path / "run" / "model.pt")
    assert ck["epoch"] >= 1 and len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2
    from dvsa.scripts import cli

    assert cli.main(["generate", "train", *args, "--set", "gen.cell=gru"]) == 2  # not a cell: a usage error
    assert cli.main(["generate", "train", *args[:-2], "--set", "gen.hidden=32"]) == 1  # resuming with other settings
    assert "other settings" in capsys.readouterr().err  # is refused, clearly


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    recs, store, _ = make_toy(tmp_path)
    # lr 0: the model never changes, so validation CIDEr never beats epoch 1 and patience 2 stops at epoch 3
    ckpt = train_generator(small(lr=0.0, epochs=10, patience=2, val_images=8), store, recs, tmp_path / "run",
                           progress=False, log=lambda *a: None)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 3
