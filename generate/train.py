"""Training the multimodal RNN (stage 2) on full frames or on region snippets.

    ckpt = train_generator(GenConfig(), store, records, "runs/gen")               # full frames
    ckpt = train_generator(cfg, store, "snippets.jsonl", "runs/gen_regions", records=records)
    model, vocab, cfg, ck = load_generator(ckpt)

One epoch visits every (input, sentence) pair once in a seeded order. The loss is the summed cross-entropy of
the batch's target words divided by the batch's number of target words. Under `torchrun` every process takes a
slice of each global batch and divides by the *global* token count, so the DDP-averaged gradient equals the
single-process one. After each epoch the model greedily captions up to `val_images` validation images (or
regions) and is scored by CIDEr (pycocoevalcap's Cider scorer on our already-tokenised text: no Java needed);
the best epoch is kept in ``model.pt`` and training stops after `patience` epochs without improvement.
``last.pt`` (every epoch) resumes exactly: optimizer, epoch, RNG and early-stopping state are in it. With
`amp` on CUDA the network's forward runs in bf16 and the loss is computed from fp32 logits. Devices, process
group, optimisers, schedules, resume and run files come from `dvsa.data.training` (shared with the aligner).
The attention generator (``arch="attention"``, `generate.attention`) trains in the same loop on region sets, its
loss adding the doubly stochastic penalty (summed per sentence, divided by the same target-word count).
With `scst_epochs` > 0 the full-frame model then trains by self-critical policy gradient on CIDEr-D
(`generate.scst`), from its best cross-entropy epoch with a fresh optimiser at `scst_lr`, validated and kept the
same way; ``last.pt`` records where that phase began (``scst_from``), so it resumes in the right phase.
A full-frame model (input "image") also gets ``bank.pt``: its training inputs and captions, which re-rank its
beam (`generate.consensus`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from dvsa.align.snippets import read_snippets
from dvsa.data import training
from dvsa.data.checkpoint import config_from, load_checkpoint, save_checkpoint
from dvsa.data.distributed import rank as process_rank
from dvsa.data.distributed import world_size
from dvsa.data.features import FeatureStore
from dvsa.data.io import check_writable
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import DataError, ImageRecord, select_split
from dvsa.data.text import Vocabulary
from dvsa.generate.attention import AttentionModel, doubly_stochastic
from dvsa.generate.cider_reward import CiderReward
from dvsa.generate.consensus import BANK_FILE, CaptionBank
from dvsa.generate.data import (
    CaptionData,
    build_vocab,
    collate,
    collate_mask,
    epoch_batches,
    full_frame_data,
    n_targets,
    snippet_data,
)
from dvsa.generate.decode import greedy
from dvsa.generate.model import CaptionModel, GenConfig, caption_loss, frequency_bias
from dvsa.generate.scst import scst_epoch
from pycocoevalcap.cider.cider import Cider

# fields that may change when a run is resumed (everything else must match the checkpoint)
# (the self-critical settings too: a trained generator may be fine-tuned by self-critical training afterwards)
RESUMABLE_CHANGES = {"epochs", "patience", "val_images", "device", "amp", "cpu_amp", "beam", "max_len", "length_norm",
                     "prior_weight", "consensus_k", "consensus_weight", "align_vote", "align_vote_beta", "scst_epochs",
                     "scst_lr", "scst_samples", "scst_images"}


def make_generator(cfg: GenConfig, vocab_size: int, feat_dim: int) -> CaptionModel | AttentionModel:
    """The generator of `cfg.arch`: the multimodal RNN ("mrnn") or the region-attention LSTM ("attention")."""
    cls = AttentionModel if cfg.arch == "attention" else CaptionModel
    return cls(cfg, vocab_size, feat_dim)


# ---------------------------------------------------------------- optimisation
def make_optimizer(cfg: GenConfig, params) -> torch.optim.Optimizer:
    """RMSprop (the paper), Adam or SGD with momentum over `params`."""
    return training.make_optimizer(cfg.optimizer, params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, alpha=cfg.rmsprop_alpha)


def lr_at(cfg: GenConfig, epoch: int) -> float:
    """Learning rate of epoch `epoch` (0-based): a pure function of the config, so resuming needs no state. The
    cosine schedule is clamped at `epochs` (it stays at 0 after the end)."""
    return training.scheduled_lr(cfg.lr, cfg.schedule, epoch, cfg.epochs, cfg.lr_step, cfg.lr_gamma, clamp=True)


def clip_gradients(cfg: GenConfig, params) -> None:
    training.clip_gradients(params, cfg.clip, cfg.clip_mode)


# ---------------------------------------------------------------- validation
def validation_cider(model: CaptionModel, data: CaptionData, vocab: Vocabulary, cfg: GenConfig,
                     limit: int | None = None, batch: int = 256,
                     progress: bool = True) -> tuple[float, dict[str, str]]:
    """Greedy captions of the first `limit` feature rows of `data`, scored by CIDEr against `data.refs`.

    Returns (CIDEr as pycocoevalcap computes it, {key: caption}).
    """
    n = len(data.keys) if not limit else min(limit, len(data.keys))
    res = {}
    bar = progress_bar(total=n, desc="validation", unit="img", enabled=progress)
    for s in range(0, n, batch):
        feats = torch.from_numpy(data.feats[s : s + batch])
        mask = torch.from_numpy(data.masks[s : s + batch]) if data.masks is not None else None
        for key, (toks, _) in zip(data.keys[s : s + batch], greedy(model, feats, cfg.max_len, cfg.min_len, mask)):
            res[key] = " ".join(vocab.decode(toks))
        bar.update(len(feats))
    bar.close()
    keys = [k for k in data.keys[:n] if data.refs.get(k)]
    if not keys:
        return float("nan"), res
    # Cider needs a non-empty hypothesis string
    score, _ = Cider().compute_score({k: data.refs[k] for k in keys}, {k: [res[k] or "<empty>"] for k in keys})
    return float(score), res


# ---------------------------------------------------------------- checkpoints
# keys a checkpoint must hold to rebuild the model (load_generator) and to resume training (last.pt)
MODEL_KEYS = ("model", "config", "vocab", "feat_dim")
RESUME_KEYS = (*MODEL_KEYS, "optimizer", "epoch", "step", "rng", "best_cider", "bad_epochs", "history")


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, vocab, cfg, ck) from a generator checkpoint. ck["features"] is the feature-store meta
    the model was trained on (rebuild its encoder with `RegionEncoder.from_meta`)."""
    ck = load_checkpoint(path, kind="generate", required=MODEL_KEYS)
    cfg = config_from(path, GenConfig.from_dict, ck["config"])
    vocab = config_from(path, Vocabulary.from_dict, ck["vocab"], "vocabulary")
    model = make_generator(cfg, len(vocab), int(ck["feat_dim"]))
    config_from(path, model.load_state_dict, ck["model"], "model")
    return model.to(device).eval(), vocab, cfg, ck


# ---------------------------------------------------------------- the loop
def train_generator(cfg: GenConfig, store: FeatureStore | str | os.PathLike, data: list[ImageRecord] | str | Path,
                    out_dir: str | os.PathLike, *, records: list[ImageRecord] | None = None, resume: bool = True,
                    progress: bool = True, log=print) -> Path:
    """Train on full frames (`data` = records; train split trains, val split validates) or on region snippets
    (`data` = a snippets JSON-lines path; `records`, when given, supply the split of each image and the
    vocabulary's training sentences). Writes ``config.json``, ``history.json``, ``last.pt`` (every epoch) and
    ``model.pt`` (the best epoch by validation CIDEr) in `out_dir` and returns the path of ``model.pt``.
    Resumes from ``out_dir/last.pt`` when it exists (and `resume`).
    """
    cfg = dataclasses.replace(cfg).validate()
    # the run's device, and the torchrun process group with its backend (nccl on CUDA only, gloo otherwise)
    device = training.setup_device(cfg.device)
    rank, world = process_rank(), world_size()
    out = check_writable(Path(out_dir), "dir")  # fail now, not after the first epoch
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    say = training.main_only(log)

    last = out / "last.pt"
    ck = load_checkpoint(last, kind="generate", required=RESUME_KEYS) if resume and last.is_file() else None
    if ck is not None:
        old = dataclasses.asdict(config_from(last, GenConfig.from_dict, ck["config"]))
        training.check_resumable(old, dataclasses.asdict(cfg), RESUMABLE_CHANGES, last)

    # --- data and vocabulary
    snippets = None
    if isinstance(data, (str, Path)):
        snippets = read_snippets(data)
    if ck is not None:
        vocab = Vocabulary.from_dict(ck["vocab"])
    elif snippets is None:
        vocab = build_vocab(data, cfg.min_count)
    else:
        vocab = build_vocab(records, cfg.min_count, snippets)
    if snippets is None:
        train = full_frame_data(select_split(data, "train"), store, vocab, cfg.input)
        val = _maybe_split(lambda: full_frame_data(select_split(data, "val"), store, vocab, cfg.input))
    else:
        split_of = {r.id: r.split for r in records} if records is not None else None
        ids = (lambda s: {i for i, sp in split_of.items() if sp in s}) if split_of else (lambda s: None)
        train = snippet_data(snippets, store, vocab, cfg.input, ids({"train", "restval"}), str(data))
        val = snippet_data(snippets, store, vocab, cfg.input, ids({"val"}), str(data)) if split_of else None
        if val is not None and not val.items:
            val = None
    if snippets is not None and cfg.input == "image":
        say("note: snippets with input='image': every snippet is paired with its whole image's feature; "
            "region models use input 'region' or 'region+image'")
    if not train.items:
        raise DataError(str(store.path), "no training pairs: no training image of the data is in the feature store")
    if train.skipped:
        say(f"note: {len(train.skipped)} training images are not in the feature store and are skipped "
            f"(e.g. {train.skipped[:3]})")
    if val is None or cfg.val_images == 0:
        say("note: no validation data; no early stopping, model.pt is the last epoch")
        val = None

    # --- model and optimiser
    torch.manual_seed(cfg.seed)
    model = make_generator(cfg, len(vocab), store.dim)
    n_sent = len(train.items)
    model.set_output_bias(frequency_bias(vocab, n_sent, train.target_counts(vocab), cfg.bias_floor))
    if cfg.feat_norm == "standardize" and train.masks is not None:
        model.set_feature_norm(torch.from_numpy(train.feats), torch.from_numpy(train.masks))
    elif cfg.feat_norm == "standardize":
        model.set_feature_norm(torch.from_numpy(train.feats))
    model.to(device)
    opt = make_optimizer(cfg, model.parameters())
    start_epoch, step, best, bad, history = 0, 0, float("-inf"), 0, []
    scst_from = None  # the epoch after which self-critical training began (None: cross-entropy epochs)
    if ck is not None:
        scst_from = ck.get("scst_from")
        if scst_from is not None:  # the optimiser state in last.pt is the self-critical one
            opt = make_optimizer(dataclasses.replace(cfg, lr=cfg.scst_lr), model.parameters())
        start_epoch, step = training.restore_training_state(ck, model, opt)
        best, bad, history = float(ck["best_cider"]), int(ck["bad_epochs"]), list(ck["history"])
        say(f"resuming {last} after epoch {start_epoch}")
    net = training.wrap_ddp(model, device)
    if rank == 0:
        training.write_config(out, dataclasses.asdict(cfg))
    say(f"training on {len(train)} pairs ({len(train.keys)} inputs), vocabulary {len(vocab)}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {device}, {world} process(es)")

    def payload(epoch: int) -> dict:
        return {
            "kind": "generate", "config": dataclasses.asdict(cfg), "vocab": vocab.to_dict(),
            **training.training_state(model, opt, epoch, step),  # model, optimizer, epoch, step, rng
            "features": dict(store.meta),
            "feat_dim": store.dim, "input_dim": model.input_dim, "best_cider": best, "bad_epochs": bad,
            "history": history, "data": "snippets" if snippets is not None else "full_frame",
            "scst_from": scst_from,
        }

    def close_epoch(rec: dict, head: str, title: str) -> None:
        """After an epoch (rank 0): validation CIDEr, the history and its curves, last.pt, and model.pt when the
        validation improved (always without validation). `head` starts the epoch's log line."""
        nonlocal best, bad
        improved = True
        if val is not None:
            cider, _ = validation_cider(model, val, vocab, cfg, cfg.val_images, progress=progress)
            rec["val_cider"] = cider
            improved = cider > best
            best, bad = (cider, 0) if improved else (best, bad + 1)
        history.append(rec)
        say(head + (f", val CIDEr {rec['val_cider']:.4f} (best {best:.4f})" if val is not None else "")
            + f", {rec['seconds']} s")
        ckpt = payload(rec["epoch"])
        save_checkpoint(last, ckpt)
        if improved:
            save_checkpoint(out / "model.pt", ckpt)
        training.write_history(out, history, title=title)

    stop = (scst_from is not None or start_epoch >= cfg.epochs
            or (cfg.patience and val is not None and bad >= cfg.patience))
    epoch = start_epoch
    while not stop:
        training.set_lr(opt, lr_at(cfg, epoch))
        t0 = time.time()
        loss, step = _train_epoch(net, model, opt, train, cfg, epoch, step, rank, world, device,
                                  progress and rank == 0)
        epoch += 1
        rec = {"epoch": epoch, "loss": loss, "lr": lr_at(cfg, epoch - 1), "seconds": round(time.time() - t0, 2)}
        if rank == 0:
            data_kind = "snippets" if snippets is not None else "full frame"
            close_epoch(rec, f"epoch {epoch}: loss {loss:.4f}", f"generator ({data_kind}): {out.name}")
        stop = epoch >= cfg.epochs or bool(cfg.patience and val is not None and bad >= cfg.patience)
        if world > 1:
            flag = torch.tensor([float(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
    if cfg.scst_epochs:
        if world > 1:
            raise ValueError("self-critical training (scst_epochs) runs in one process; train it without torchrun")
        if scst_from is None:  # begin from the best cross-entropy epoch, with a fresh optimiser
            if (out / "model.pt").is_file():
                model.load_state_dict(load_checkpoint(out / "model.pt", kind="generate", required=MODEL_KEYS)["model"])
            scst_from, bad = epoch, 0
            opt = make_optimizer(dataclasses.replace(cfg, lr=cfg.scst_lr), model.parameters())
            say(f"self-critical training from epoch {epoch} (CIDEr-D reward, {cfg.scst_samples} samples per input)")
        reward = CiderReward(train.refs)
        while epoch < scst_from + cfg.scst_epochs and not (cfg.patience and val is not None and bad >= cfg.patience):
            training.set_lr(opt, cfg.scst_lr)
            t0 = time.time()
            mean_reward, step = scst_epoch(model, opt, train, reward, vocab, cfg, epoch, step, device, progress)
            epoch += 1
            rec = {"epoch": epoch, "phase": "scst", "reward": mean_reward, "lr": cfg.scst_lr,
                   "seconds": round(time.time() - t0, 2)}
            close_epoch(rec, f"epoch {epoch} (self-critical): sampled CIDEr-D {mean_reward:.4f}",
                        f"generator (self-critical): {out.name}")
    if rank == 0 and snippets is None and cfg.input == "image":  # the captions that re-rank its beam
        CaptionBank.from_data(train).save(out / BANK_FILE)
    if rank == 0 and not last.is_file():  # epochs=0: keep the initial model (a baseline, benchmarks)
        save_checkpoint(last, payload(epoch))
        save_checkpoint(out / "model.pt", payload(epoch))
    if val is not None and rank == 0 and history and cfg.patience and bad >= cfg.patience:
        say(f"early stop: no better validation CIDEr for {bad} epochs (best {best:.4f})")
    if world > 1:
        dist.barrier()
    return out / "model.pt"


def _maybe_split(fn):
    try:
        d = fn()
    except DataError:  # no such split
        return None
    return d if d.items else None


def _train_epoch(net, model, opt, data: CaptionData, cfg: GenConfig, epoch: int, step: int, rank: int,
                 world: int, device: torch.device, show: bool) -> tuple[float, int]:
    """One pass over `data`; returns (mean loss per target word over the epoch, global step). Under `cfg.amp` on
    CUDA only the forward runs in bf16; the cross-entropy sums fp32 logits."""
    # Dropout draws from a stream fixed by (seed, epoch, rank): a resumed run continues exactly.
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + rank)
    model.train()
    batches = epoch_batches(len(data), cfg.batch_size, cfg.seed, epoch, world)
    total_loss, total_tok, t0 = 0.0, 0, time.time()
    bar = progress_bar(batches, total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       enabled=show)
    params = [p for p in model.parameters() if p.requires_grad]
    for gb in bar:
        ntok = n_targets(data, gb)  # global target words of this batch
        mine = gb[rank::world]
        feats, inp, tgt = (x.to(device, non_blocking=True) for x in collate(data, mine))
        mask = collate_mask(data, mine)
        with training.autocast(device, cfg.amp, cfg.cpu_amp):
            if mask is None:
                logits = net(feats, inp, targets=tgt)  # [n, V]: the real targets only
            else:  # the attention generator: region sets [b, N, D], alphas [b, T, N]
                mask = mask.to(device, non_blocking=True)
                logits, alphas = net(feats, inp, mask, return_attention=True, targets=tgt)
        loss = caption_loss(logits.float(), tgt, normalizer=ntok / world)  # DDP averages over processes
        if mask is not None and cfg.att_lambda:
            loss = loss + doubly_stochastic(alphas.float(), tgt, mask, cfg.att_lambda) / (ntok / world)
        lv = float(loss.detach()) / world  # this process's share of the batch loss
        if world > 1:
            t = torch.tensor([lv], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            lv = float(t.item())
        training.check_finite(lv, epoch, step + 1)  # before the step: every rank sees the same global value
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(cfg, params)
        opt.step()
        training.reclaim_threads()  # a stage beside this one has ended: its threads come back
        step += 1
        total_loss += lv * ntok
        total_tok += ntok
        bar.set_postfix(loss=f"{lv:.3f}", tok_s=f"{total_tok / max(1e-9, time.time() - t0):.0f}")
    bar.close()
    return total_loss / max(1, total_tok), step

