"""Training the alignment model on a learnable toy: R@1 must rise far above chance; exact resume; DDP on CPU."""
import json

import numpy as np
import pytest
import torch
from align_fakes import one_thread  # noqa: F401 (autouse fixture)
from dvsa.align.model import AlignConfig
from dvsa.align.retrieval import evaluate_retrieval
from dvsa.align.train import load_alignment, should_stop, train_alignment
from dvsa.data.checkpoint import load_checkpoint
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Sentence

N_OBJ, DIM = 12, 16


def make_toy(path, n_train=60, n_val=20, n_test=20, seed=0, missing=()):
    """Images of 3 distinct objects; region features are a code of each object's word (+ noise), sentences name
    the objects in random order with fillers. Returns (records, store)."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(N_OBJ, DIM)).astype(np.float32)
    records, sid = [], 0
    with FeatureStoreWriter(path, {"dim": DIM, "producer": "toy"}, part_size=32) as w:
        splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        for k, split in enumerate(splits):
            objs = rng.choice(N_OBJ, 3, replace=False)
            regions = codes[objs] + 0.3 * rng.normal(size=(3, DIM)).astype(np.float32)
            whole = regions.mean(0, keepdims=True)
            feats = np.concatenate([whole, regions])
            boxes = np.array([[0, 0, 64, 64]] + [[i * 10, 0, i * 10 + 20, 20] for i in range(3)], np.float32)
            image_id = f"img{k}"
            if image_id not in missing:
                w.add(image_id, boxes, feats, whole[0], (64, 64))
            sents = []
            for _ in range(5):
                words = [f"w{o}" for o in rng.permutation(objs)]
                for _ in range(rng.integers(0, 3)):
                    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(["a", "the", "and"])))
                sents.append(Sentence(sid, " ".join(words), words))
                sid += 1
            records.append(ImageRecord(image_id, f"{image_id}.png", 64, 64, split, sents))
    return records, FeatureStore(path)


def toy_cfg(**kw):
    base = dict(embed_dim=32, hidden_dim=24, word_dim=16, dropout=0.1, min_count=1, batch_size=20, epochs=12,
                lr=0.003, lr_schedule="none", weight_decay=1e-5, patience=0)
    base.update(kw)
    return AlignConfig(**base)


def test_early_stopping_waits_for_the_next_learning_rate_step():
    """14 epochs with the rate / 10 after 11 and patience 3 (the pipeline's recipe): 3 bad epochs end the run only
    once no lower rate is still to come; without a step schedule they end it at once."""
    cfg = AlignConfig(epochs=14, lr_schedule="step", lr_step=11, lr_gamma=0.1, patience=3)
    assert not should_stop(cfg, 11, 3) and not should_stop(cfg, 8, 5)  # the step at epoch 11 is ahead
    assert should_stop(cfg, 13, 3) and not should_stop(cfg, 13, 2)  # after it, patience as usual
    assert should_stop(AlignConfig(epochs=14, lr_schedule="none", patience=3), 11, 3)
    assert not should_stop(AlignConfig(epochs=14, patience=0), 11, 9)

def test_training_learns_the_toy_far_above_chance(tmp_path):
    records, store = make_toy(tmp_path / "store")
    summary = train_alignment(records, store, tmp_path / "run", toy_cfg(), progress=False, log=lambda *a: None)
    assert summary["pairs"] == 300 and summary["epochs_run"] == 12
    model, vocab, cfg = load_alignment(tmp_path / "run" / "model.pt")
    test = [r for r in records if r.split == "test"]
    m = evaluate_retrieval(model, store, test, vocab, protocol="all")
    # Chance: 5% R@1 both ways (20 images, 100 sentences).
    assert m["annotation"]["r1"] >= 40 and m["search"]["r1"] >= 25, m
    assert m["n_images"] == 20 and m["n_sentences"] == 100
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["embed_dim"] == 32


def test_missing_images_are_skipped_and_counted(tmp_path):
    records, store = make_toy(tmp_path / "store", n_train=10, n_val=0, n_test=0, missing=("img3", "img7"))
    logs = []
    s = train_alignment(records, store, tmp_path / "run", toy_cfg(epochs=1), progress=False, log=logs.append)
    assert s["missing_images"] == 2 and s["skipped_sentences"] == 10 and s["pairs"] == 40
    assert any("10 sentences skipped" in line for line in logs)


def test_resume_is_exact_and_checkpoint_is_self_contained(tmp_path):
    records, store = make_toy(tmp_path / "store", n_train=20, n_val=6, n_test=0)
    cfg = toy_cfg(epochs=2, dropout=0.3, lr_schedule="step", lr_step=1, lr_gamma=0.5)
    quiet = dict(progress=False, log=lambda *a: None)
    train_alignment(records, store, tmp_path / "straight", cfg, **quiet)
    train_alignment(records, store, tmp_path / "split", toy_cfg(epochs=1, dropout=0.3, lr_schedule="step",
                                                              lr_step=1, lr_gamma=0.5), **quiet)
    train_alignment(records, store, tmp_path / "split", cfg, **quiet)  # resumes from last.pt
    a = load_checkpoint(tmp_path / "straight" / "last.pt", kind="align")
    b = load_checkpoint(tmp_path / "split" / "last.pt", kind="align")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"][1]["loss"] == b["history"][1]["loss"]
    # weights_only load happened in load_checkpoint; the checkpoint carries what rebuilds the model.
    assert {"config", "vocab", "model", "optimizer", "rng", "feat_dim", "format_version"} <= set(a)
    with pytest.raises(ValueError, match="different config"):
        train_alignment(records, store, tmp_path / "split", toy_cfg(epochs=3, embed_dim=8), **quiet)


def test_feature_standardisation_is_learnt_from_train_regions_and_saved(tmp_path):
    """feat_norm="standardize": the statistics of the training images' regions go into the checkpoint, and the
    region embedding equals the projection of (x - mean) / std, checked against numpy."""
    records, store = make_toy(tmp_path / "store", n_train=10, n_val=0, n_test=0)
    train_alignment(records, store, tmp_path / "run", toy_cfg(epochs=1, feat_norm="standardize"), progress=False,
                    log=lambda *a: None)
    model, _, cfg = load_alignment(tmp_path / "run" / "model.pt")
    assert cfg.feat_norm == "standardize"
    x = np.concatenate([store.regions(f"img{k}")[1] for k in range(10)]).astype(np.float64)
    np.testing.assert_allclose(model.feat_mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.feat_scale.numpy(), 1 / np.sqrt(x.var(0) + 1e-4), rtol=1e-4)
    feats = torch.from_numpy(x[:4].astype(np.float32))[None]
    want = ((x[:4] - x.mean(0)) / np.sqrt(x.var(0) + 1e-4)) @ model.region_proj.weight.detach().double().numpy().T
    want += model.region_proj.bias.detach().double().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(model.embed_regions(feats)[0].double().numpy(), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="feat_norm"):
        AlignConfig(feat_norm="l2")


def test_hardest_negative_after_a_warm_up_of_summed_epochs(tmp_path):
    """loss="hardest" with hardest_from=1: epoch 1 equals the sum loss's epoch 1, epoch 2 then differs."""
    records, store = make_toy(tmp_path / "store", n_train=12, n_val=0, n_test=0)
    quiet = dict(progress=False, log=lambda *a: None)
    runs = {name: train_alignment(records, store, tmp_path / name, toy_cfg(epochs=2, **kw), **quiet)["history"]
            for name, kw in (("sum", {}), ("warm", {"loss": "hardest", "hardest_from": 1}),
                             ("hard", {"loss": "hardest"}))}
    assert runs["warm"][0]["loss"] == runs["sum"][0]["loss"] != runs["hard"][0]["loss"]
    assert runs["warm"][1]["loss"] != runs["sum"][1]["loss"]
    # the hardest hinge of a row/column is at most the sum of its hinges
    assert runs["hard"][0]["loss"] < runs["sum"][0]["loss"]


def make_size_toy(path, n_train=80, n_test=40, seed=1):
    """One object per image, small or large, with the SAME feature for both sizes: only its box tells the size.
    Sentences are "<small|large> w<object>"."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(4, DIM)).astype(np.float32)
    records, sid = [], 0
    with FeatureStoreWriter(path, {"dim": DIM, "producer": "toy"}, part_size=64) as w:
        for k, split in enumerate(["train"] * n_train + ["test"] * n_test):
            obj, large = int(rng.integers(4)), bool(k % 2)
            f = codes[obj] + 0.1 * rng.normal(size=DIM).astype(np.float32)
            side = 48 if large else 12
            x, y = rng.integers(0, 64 - side, 2)
            boxes = np.array([[0, 0, 64, 64], [x, y, x + side, y + side]], np.float32)
            w.add(f"img{k}", boxes, np.stack([f, f]), f, (64, 64))
            words = ["large" if large else "small", f"w{obj}"]
            sents = [Sentence(sid + j, " ".join(words), words) for j in range(5)]
            sid += 5
            records.append(ImageRecord(f"img{k}", f"img{k}.png", 64, 64, split, sents))
    return records, FeatureStore(path)


def test_box_geometry_lets_size_words_tell_images_apart(tmp_path):
    """With AlignConfig.geometry the size word ranks the object's images of the right size above those of the
    other size; without it (the paper's region input) the two sizes of one object look the same (about half).

    Measured as a pairwise rate (per query "<size> w<obj>": the share of (right-size, wrong-size) pairs of that
    object's test images that the query orders right), over 200 test images and 3 toys, geometry minus none: a
    top-1 rate over 40 images has only 8 distinct queries and moved across a fixed bar between machines.
    Measured here (toy seeds 1, 2, 3): with geometry 0.75 / 0.73 / 0.79, without 0.47 / 0.46 / 0.55 (40 epochs:
    the same to 0.01; other training seeds: with 0.73..1.0, without 0.46..0.56)."""
    right = {False: [], True: []}
    for seed in (1, 2, 3):
        records, store = make_size_toy(tmp_path / f"store{seed}", n_test=200, seed=seed)
        test = [r for r in records if r.split == "test"]
        for geometry in (False, True):
            cfg = toy_cfg(epochs=25, geometry=geometry, feat_norm="standardize", optimizer="adam", lr=3e-3, dropout=0.0)
            run = tmp_path / f"s{seed}g{geometry}"
            train_alignment(records, store, run, cfg, progress=False, log=lambda *a: None)
            model, vocab, _ = load_alignment(run / "model.pt")
            from dvsa.align.retrieval import pad_tokens
            from dvsa.align.show import rank_images

            queries = sorted({tuple(r.sentences[0].tokens) for r in test})  # the 8 "<size> w<obj>"
            tokens, lengths = pad_tokens([vocab.encode(list(q)) for q in queries])
            with torch.no_grad():
                scores = rank_images(model, store, [r.id for r in test], tokens, lengths).numpy()  # [N, Q]
            size = np.array([r.sentences[0].tokens[0] for r in test])
            obj = np.array([r.sentences[0].tokens[1] for r in test])
            rates = []
            for j, (qsize, qobj) in enumerate(queries):
                good = scores[(obj == qobj) & (size == qsize), j]
                bad = scores[(obj == qobj) & (size != qsize), j]
                assert len(good) and len(bad), (seed, qsize, qobj)  # 200 test images: every object in both sizes
                rates.append(np.mean(good[:, None] > bad[None, :]))
            right[geometry].append(float(np.mean(rates)))
    gain = np.mean(right[True]) - np.mean(right[False])
    # measured gain 0.26 (per toy 0.27 / 0.27 / 0.24); box_geometry zeroed (no effect) gives 0.00, chance +- ~0.03;
    # 0.1 leaves 0.16 for other machines
    assert gain >= 0.1 and np.mean(right[False]) <= 0.7, right


def test_whole_image_drop_hides_row_0_in_training_only(monkeypatch):
    """whole_image_drop: the loss sees row 0 masked for the drawn images (never for an image with no detection);
    in eval mode, or at 0, nothing changes."""
    import dvsa.align.train as train_mod
    from dvsa.align.model import AlignmentModel
    from dvsa.align.train import batch_loss

    seen = []
    real = train_mod.image_sentence_scores
    monkeypatch.setattr(train_mod, "image_sentence_scores", lambda v, rmask, *a, **k: seen.append(rmask) or real(v, rmask, *a, **k))
    torch.manual_seed(0)
    cfg = toy_cfg(whole_image_drop=0.5)
    model = AlignmentModel(cfg, 10, DIM)
    rmask = torch.ones(64, 3, dtype=torch.bool)
    rmask[:8, 1:] = False  # 8 images with the whole image only
    batch = {"feats": torch.randn(64, 3, DIM), "rmask": rmask, "tokens": torch.randint(1, 10, (64, 4)),
             "lengths": torch.full((64,), 4), "image": torch.arange(64)}
    batch_loss(model.train(), cfg, batch, torch.device("cpu"))
    dropped = ~seen[-1][:, 0]
    assert not dropped[:8].any() and 10 <= int(dropped[8:].sum()) <= 46  # ~half of the 56 others
    assert seen[-1][:, 1:].equal(rmask[:, 1:]) and batch["rmask"].equal(rmask)  # the batch itself is untouched
    batch_loss(model.eval(), cfg, batch, torch.device("cpu"))
    assert seen[-1].equal(rmask)
    with pytest.raises(ValueError, match="whole_image_drop"):
        AlignConfig(whole_image_drop=1.0)
