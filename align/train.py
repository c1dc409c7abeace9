"""Training the alignment model (the paper's recipe by default: SGD with momentum 0.9, batches of 100 pairs,
dropout, elementwise gradient clipping at 5, weight decay), with early stopping on the validation R@K sum,
exact resume, bf16 autocast on CUDA (the networks' forward only: scores and loss are summed in fp32) and
torchrun / DDP over several processes. What the generators share (devices, optimisers, schedules, resume, run
files) is in `dvsa.data.training`.

Outputs in `out_dir`: ``last.pt`` (the state after the latest epoch; training resumes from it), ``model.pt``
(the epoch with the best validation R@K sum, or the last epoch when there is no validation split),
``config.json`` (the resolved AlignConfig) and ``history.json`` (loss, pairs/s and validation metrics per epoch).
Checkpoints are self-contained and load with ``torch.load(weights_only=True)``:
``{"kind": "align", "config", "vocab", "model", "feat_dim", "features" (the store's meta), "optimizer",
"epoch" (epochs done), "step", "rng", "best", "bad_epochs", "history"}``.

Dimension glossary: B pairs in a batch (global), b pairs on this rank, R regions, T words, D features, H embed.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from dvsa.align import distributed as dist
from dvsa.align.data import (
    PairSet,
    batch_source,
    build_pairs,
    collate,
    epoch_batches,
    rank_slice,
)
from dvsa.align.loss import max_margin_loss
from dvsa.align.model import AlignConfig, AlignmentModel, lengths_mask
from dvsa.align.retrieval import evaluate_retrieval
from dvsa.align.scores import image_sentence_scores
from dvsa.data import training
from dvsa.data.checkpoint import config_from, load_checkpoint, save_checkpoint
from dvsa.data.features import FeatureStore
from dvsa.data.io import check_writable
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import select_split
from dvsa.data.text import Vocabulary

KIND = "align"
# keys a checkpoint must hold to rebuild the model (load_alignment) and to resume training (last.pt)
MODEL_KEYS = ("model", "config", "vocab", "feat_dim")
RESUME_KEYS = (*MODEL_KEYS, "words_trained", "optimizer", "epoch", "step", "rng", "best", "bad_epochs", "history")
# Fields that may change when a run is resumed (they do not change what was learnt so far).
RESUMABLE_CHANGES = {"epochs", "patience", "val_images", "precollate_gb", "amp", "cpu_amp"}


def learning_rate(cfg: AlignConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based); the cosine schedule is not clamped at `epochs`."""
    return training.scheduled_lr(cfg.lr, cfg.lr_schedule, epoch, cfg.epochs, cfg.lr_step, cfg.lr_gamma)


def should_stop(cfg: AlignConfig, epoch: int, bad: int) -> bool:
    """Early stopping before 0-based `epoch`, after `bad` epochs without a better validation R@K sum: at
    `cfg.patience` of them, unless a step schedule still has a lower learning rate to come (the run goes on to
    it: a plateau at the high rate is what the step is for; the best epoch is kept either way)."""
    if not cfg.patience or bad < cfg.patience:
        return False
    now = learning_rate(cfg, epoch - 1)
    return cfg.lr_schedule != "step" or all(learning_rate(cfg, e) >= now for e in range(epoch, cfg.epochs))


def make_optimizer(cfg: AlignConfig, model: torch.nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or Adam over the parameters that train (fused: `training.make_optimizer`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return training.make_optimizer(cfg.optimizer, params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, fused=fused)


def batch_loss(model, cfg: AlignConfig, batch: dict, device: torch.device, epoch: int = 0,
               sparse_grad: bool = True) -> torch.Tensor:
    """Eq. 9 on one global batch; the 0-based `epoch` picks the sum or the hardest negative (`hardest_from`).
    Under DDP each rank passes its share; embeddings are gathered (with gradient) so every rank computes the loss
    of the whole global batch, in the global order. With `cfg.amp` on CUDA (or `cfg.cpu_amp` on a CPU with native
    bf16) the network's forward runs in bf16, and eq. 8's dot products are bf16 products of those bf16 embeddings
    (fp32 accumulation); the embeddings are cast to fp32 before the gather, the score sums over words and regions
    and the loss.
    sparse_grad=False: eq. 8's gradient by autograd through every region (the old path; `image_sentence_scores`)."""
    feats = batch["feats"].to(device, non_blocking=True)
    tokens, lengths = batch["tokens"].to(device), batch["lengths"].to(device)
    rmask, image = batch["rmask"].to(device), batch["image"].to(device)
    boxes = batch["boxes"].to(device) if "boxes" in batch else None
    if cfg.whole_image_drop > 0 and model.training:  # the global RNG draws it: a resumed run draws the same
        drop = (torch.rand(rmask.shape[0]) < cfg.whole_image_drop).to(device) & rmask[:, 1:].any(1)
        rmask = rmask.clone()
        rmask[:, 0] &= ~drop
    with training.autocast(device, cfg.amp, cfg.cpu_amp):
        v, s = model(feats, tokens, lengths, boxes)  # [b, R, H], [b, T, H]
    # bf16 embeddings (autocast) keep bf16 dot products in eq. 8 (`image_sentence_scores`' dot_dtype)
    dot_dtype = torch.bfloat16 if v.dtype == s.dtype == torch.bfloat16 else None
    v, s = v.float(), s.float()  # every reduction below in fp32
    wmask = lengths_mask(lengths, tokens.shape[1])  # [b, T]
    if dist.is_distributed():
        r, t = dist.max_over_ranks([v.shape[1], s.shape[1]], device)
        sizes = dist.gather_sizes(v.shape[0], device)
        pad = torch.nn.functional.pad
        v = dist.all_gather_grad(pad(v, (0, 0, 0, r - v.shape[1])), sizes)  # [B, R, H]
        s = dist.all_gather_grad(pad(s, (0, 0, 0, t - s.shape[1])), sizes)  # [B, T, H]
        rmask = dist.all_gather_grad(pad(rmask.to(torch.uint8), (0, r - rmask.shape[1])), sizes).bool()
        wmask = dist.all_gather_grad(pad(wmask.to(torch.uint8), (0, t - wmask.shape[1])), sizes).bool()
        image = dist.all_gather_grad(image, sizes)
    scores = image_sentence_scores(v, rmask, s, wmask, kind=cfg.score, norm=cfg.score_norm,
                                   sparse_grad=sparse_grad, dot_dtype=dot_dtype)  # [B, B]
    same = image[:, None] == image[None, :]  # pairs that share an image are not negatives
    hardest = cfg.loss == "hardest" and epoch >= cfg.hardest_from
    return max_margin_loss(scores, cfg.margin, hardest=hardest, same=same)


def train_epoch(model, opt, cfg: AlignConfig, pairs: PairSet, store, epoch: int, device, progress=True,
                source=None, sparse_grad: bool = True, max_steps: int | None = None) -> dict:
    """One pass over the pairs; returns {"loss": mean batch loss, "pairs_per_s", "steps", "seconds"}.

    source: idx (int [b]) -> batch dict (`align.data.batch_source`); default `collate` from `store` per batch.
    sparse_grad: see `batch_loss`. max_steps: stop after this many batches (benchmarks; None = the epoch)."""
    model.train()
    batches = epoch_batches(len(pairs), cfg.batch_size, epoch, cfg.seed)[:max_steps]
    source = source or (lambda idx: collate(pairs, idx, store))
    rank, world = dist.rank(), dist.world_size()
    bar = progress_bar(batches, total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       enabled=progress and rank == 0)
    total, n_pairs, t0 = 0.0, 0, time.perf_counter()
    for step, idx in enumerate(bar):
        batch = source(rank_slice(idx, rank, world))
        loss = batch_loss(model, cfg, batch, device, epoch, sparse_grad)  # the global batch's loss, on every rank
        value = training.check_finite(loss.item(), epoch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        training.clip_gradients(model.parameters(), cfg.grad_clip, "value")
        opt.step()
        training.reclaim_threads()  # a stage beside this one has ended: its threads come back
        total += value
        n_pairs += len(idx)
        rate = n_pairs / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{value:.3f}", pairs_s=f"{rate:.0f}")
    elapsed = time.perf_counter() - t0
    return {"loss": total / max(1, len(batches)), "pairs_per_s": n_pairs / max(elapsed, 1e-9),
            "steps": len(batches), "seconds": elapsed}


def _checkpoint(cfg, vocab, model, opt, store, epoch, step, best, bad, history) -> dict:
    return {
        "kind": KIND,
        "config": asdict(cfg),
        "vocab": vocab.to_dict(),
        "feat_dim": int(store.dim),
        "words_trained": bool(model.words.weight.requires_grad),
        "features": dict(store.meta),
        **training.training_state(model, opt, epoch, step),  # model, optimizer, epoch, step, rng
        "best": best,
        "bad_epochs": bad,
        "history": history,
    }


def train_alignment(records, store, out_dir, cfg: AlignConfig | None = None, device=None, log=print,
                    vocab: Vocabulary | None = None, word_vectors=None, val_records=None, resume: bool = True,
                    progress: bool = True) -> dict:
    """Train on the "train" split of `records` (images in `store`, a FeatureStore or its path).

    Validation (early stopping, choice of ``model.pt``): `val_records`, else the "val" split of `records`; the
    first `cfg.val_images` of them that are in the store. Without validation images every epoch runs and the
    last one is kept. vocab: built on the train sentences (`cfg.min_count`) unless given. word_vectors: float
    [V, E] rows for the vocabulary (e.g. `data.vectors.vectors_for_vocab`), else random. A run finds its own
    ``last.pt`` in `out_dir` and continues from it exactly (same batches, same RNG) when `resume`.
    Returns a summary dict (pairs, skipped sentences, best epoch and metrics, history).
    """
    cfg = cfg or AlignConfig()
    out = check_writable(Path(out_dir), "dir")  # fail now, not after the first epoch
    out.mkdir(parents=True, exist_ok=True)
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    device = training.setup_device(device)  # joins the torchrun group (nccl on CUDA, gloo on the CPU) if needed
    main = dist.is_main()
    say = training.main_only(log)

    train_recs = select_split(records, "train")
    last_path = out / "last.pt"
    ck = load_checkpoint(last_path, kind=KIND, required=RESUME_KEYS) if resume and last_path.is_file() else None
    if ck is not None:
        training.check_resumable(ck["config"], asdict(cfg), RESUMABLE_CHANGES, last_path)
        vocab = Vocabulary.from_dict(ck["vocab"])
    elif vocab is None:
        vocab = Vocabulary.build([s.tokens for r in train_recs for s in r.sentences], min_count=cfg.min_count)
    pairs = build_pairs(train_recs, store, vocab, cfg.max_words)
    say(f"train: {len(pairs)} pairs of {len(pairs.image_ids)} images; vocabulary {len(vocab)} words; "
        f"{pairs.skipped_sentences} sentences skipped ({pairs.missing_images} images not in the store)")
    if len(pairs) < 2:
        raise ValueError("fewer than 2 training pairs with features: nothing to learn")
    source, how = batch_source(pairs, store, cfg.precollate_gb)
    say(f"train batches: {how}")
    if val_records is None:
        val_records = [r for r in records if r.split == "val"]
    val_records = [r for r in val_records if r.id in store][: cfg.val_images]
    if not val_records:
        say("no validation images in the store: no early stopping, the last epoch is kept")

    torch.manual_seed(cfg.seed)
    model = AlignmentModel(cfg, len(vocab), store.dim, word_vectors=word_vectors)
    if cfg.feat_norm == "standardize":  # a resumed run loads the same statistics with the weights
        model.set_feature_norm(region_sample(store, pairs.image_ids, seed=cfg.seed, model=model))
    model.to(device)
    if ck is not None:  # the same parameters as the interrupted run train (word vectors fixed or not)
        model.words.weight.requires_grad_(bool(ck["words_trained"]))
    opt = make_optimizer(cfg, model)
    start, step, best, bad, history = 0, 0, None, 0, []
    if ck is not None:
        start, step = training.restore_training_state(ck, model, opt)
        best, bad, history = ck["best"], ck["bad_epochs"], list(ck["history"])
        say(f"resumed from {last_path} after epoch {start}")
    net = training.wrap_ddp(model, device)
    if main:
        training.write_config(out, asdict(cfg))

    stopped = False
    for epoch in range(start, cfg.epochs):
        if should_stop(cfg, epoch, bad):
            stopped = True
            break
        training.set_lr(opt, learning_rate(cfg, epoch))
        stats = train_epoch(net, opt, cfg, pairs, store, epoch, device, progress, source=source)
        step += stats["steps"]
        row = {"epoch": epoch + 1, "lr": learning_rate(cfg, epoch), **stats}
        improved = True
        if val_records:
            m = evaluate_retrieval(model, store, val_records, vocab, protocol="all", device=device,
                                   progress=progress and main)
            row["val"] = {d: m[d] for d in ("annotation", "search")} | {"rsum": m["rsum"]}
            improved = best is None or m["rsum"] > best["rsum"]
            if improved:
                best = {"epoch": epoch + 1, "rsum": m["rsum"], "annotation": m["annotation"], "search": m["search"]}
            bad = 0 if improved else bad + 1
        history.append(row)
        say(_epoch_line(row))
        if main:
            ck_now = _checkpoint(cfg, vocab, model, opt, store, epoch + 1, step, best, bad, history)
            save_checkpoint(last_path, ck_now)
            if improved:
                save_checkpoint(out / "model.pt", ck_now)
            training.write_history(out, history, title=f"alignment: {out.name}")
        dist.barrier()
    if stopped:
        say(f"early stop: no better validation R@K sum for {cfg.patience} epochs")
    return {
        "pairs": len(pairs),
        "images": len(pairs.image_ids),
        "skipped_sentences": pairs.skipped_sentences,
        "missing_images": pairs.missing_images,
        "vocab_size": len(vocab),
        "epochs_run": len(history),
        "early_stopped": stopped,
        "best": best,
        "history": history,
        "pairs_per_s": float(np.mean([h["pairs_per_s"] for h in history])) if history else 0.0,
        "checkpoint": str(out / "model.pt"),
    }


def region_sample(store, image_ids, n_images: int = 2000, seed: int = 0, model=None) -> np.ndarray:
    """float32 [N, D]: every region feature of up to `n_images` training images (a seeded sample); with a `model`,
    its region inputs (`AlignmentModel.region_inputs`: [N, D + geometry_dim(bins)] when it reads box geometry)."""
    ids = list(image_ids)
    if len(ids) > n_images:
        pick = np.random.default_rng(seed).choice(len(ids), n_images, replace=False)
        ids = [ids[i] for i in sorted(pick)]
    rows = []
    for i in ids:
        boxes, feats = store.regions(i)
        if model is not None:
            feats = model.region_inputs(torch.tensor(feats), torch.tensor(boxes)).numpy()
        rows.append(np.asarray(feats, dtype=np.float32))
    return np.concatenate(rows)


def _epoch_line(row: dict) -> str:
    line = f"epoch {row['epoch']}: loss {row['loss']:.4f}, lr {row['lr']:.3g}, {row['pairs_per_s']:.0f} pairs/s"
    if "val" in row:
        a, s = row["val"]["annotation"], row["val"]["search"]
        line += (f"; val R@1/5/10 annotation {a['r1']:.1f}/{a['r5']:.1f}/{a['r10']:.1f}, "
                 f"search {s['r1']:.1f}/{s['r5']:.1f}/{s['r10']:.1f}, rsum {row['val']['rsum']:.1f}")
    return line


def load_alignment(path, device="cpu") -> tuple[AlignmentModel, Vocabulary, AlignConfig]:
    """(model in eval mode, vocabulary, config) from a checkpoint written by `train_alignment`."""
    ck = load_checkpoint(path, kind=KIND, required=MODEL_KEYS, map_location="cpu")
    cfg = config_from(path, AlignConfig.from_dict, ck["config"])
    vocab = config_from(path, Vocabulary.from_dict, ck["vocab"], "vocabulary")
    model = AlignmentModel(cfg, len(vocab), int(ck["feat_dim"]))
    config_from(path, model.load_state_dict, ck["model"], "model")
    return model.to(device).eval(), vocab, cfg
