"""Speed of one training step against its FLOP floor (``dvsa bench train``).

    rows = bench_train(TrainBenchConfig(steps=3), {"default": (AlignConfig(), 1280)})
    print(format_train_table(rows))

The alignment step (batches of `batch` pairs drawn from a random in-memory feature store: forward, eq. 8
scores, eq. 9 loss, backward, elementwise clipping, optimiser step) runs on two paths, their steps interleaved
so that both see the same load of a shared machine:

- "old": every batch collated from the store (`align.data.collate`), the words through every padded position
  (`AlignmentModel.embed_words_slow`), eq. 8's gradient by autograd through every region
  (`image_sentence_scores(..., sparse_grad=False)`), masks drawn by `torch.nn.Dropout` (`torch_dropout`);
- "new": batches indexed from tensors collated once (`align.data.precollate`), the words' layers on real words
  only (`embed_words`), eq. 8's gradient to each word's best region only (`align.scores.WordMax`): what
  `train_alignment` runs, with `dvsa.data.dropout.Dropout`'s masks;
- "bf16" (on a CPU with native bf16 only): the new path with the network's forward under bf16 autocast
  (`AlignConfig.cpu_amp`).

Other steps (the script adds the generators', old and new) are given as functions that build a step. The floor
of a step is its matrix-product FLOPs (forward and backward, as `torch.utils.flop_counter` counts them on the new path,
plus the 2 x 2 B W H multiply-adds of `WordMax`'s gathers in the backward, which it does not count; the bf16
path's backward products with the one-hot matrix, 2 x 2 W B R H, it counts) at the float32 matmul
rate measured in the same run (`align.bench.matmul_gflops`, mean of before and after); the "bf16" path's floor
is the same FLOPs at the bf16 matmul rate, measured likewise. Times are the median of
`steps` steps after `warmup` untimed ones (the first pass over the random store's batches faults in the memory
that later steps reuse: those steps took 2-3x the later ones), with the allocator as the trainers set it
(`retain_memory`).

Dimension glossary: B pairs in a batch, R regions, T words, W real words of the batch, D features, H embed.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from dvsa.align.bench import matmul_gflops
from dvsa.align.data import PairSet, collate, epoch_batches, precollate
from dvsa.align.model import AlignConfig, AlignmentModel
from dvsa.align.scores import WordMax
from dvsa.align.train import batch_loss, make_optimizer
from dvsa.data import training
from dvsa.data.dropout import Dropout
from dvsa.data.memstore import MemoryStore
from torch.utils.flop_counter import FlopCounterMode

# A step to time: () -> (step function, pairs per step, extra FLOPs the counter does not see).
StepMaker = Callable[[], tuple[Callable[[], None], int, float]]


@dataclass
class TrainBenchConfig:
    """Sizes of ``dvsa bench train`` (its flags override these); the models' sizes are their configs'."""

    steps: int = 5  # timed steps per path (their median is kept), after `warmup` untimed steps
    warmup: int = 6  # untimed steps per path first: one pass over the batches of the default store (600 pairs)
    batch: int = 100  # pairs per step (the paper: 100)
    regions: int = 20  # regions per image (the paper: 19 detections + the whole image)
    words: int = 12  # mean words per sentence (lengths words-4 .. words+4)
    vocab: int = 3000  # vocabulary size
    images: int = 120  # images of the random store the batches come from, 5 sentences each
    feat_dim: int = 1280  # D of the "default" and "demo" sizes and of the generators (EfficientNet-Lite0)
    paper_feat_dim: int = 4096  # D of the "paper" size (VGG fc7)
    matmul_size: int = 2048  # n of the n x n matmul that measures GFLOP/s
    threads: int = 0  # torch threads (0 = torch's default)
    seed: int = 0
    retain_memory: bool = True  # the allocator as the trainers set it (`training.retain_freed_memory`); False =
    #                             the C library's default (a process-wide setting: one run or the other)


def random_pairs(cfg: TrainBenchConfig, feat_dim: int, g: np.random.Generator) -> tuple[PairSet, MemoryStore]:
    """A random store of `cfg.images` images (`cfg.regions` regions of `feat_dim` features >= 0, boxes inside a
    640 x 480 frame, row 0 the whole frame) and 5 random sentences per image, as a PairSet."""
    store = MemoryStore(feat_dim)
    for k in range(cfg.images):
        xy = g.uniform(0, 300, (cfg.regions, 2))
        boxes = np.concatenate([xy, xy + g.uniform(20, 300, (cfg.regions, 2))], 1)
        boxes[0] = [0, 0, 640, 480]
        feats = np.maximum(g.standard_normal((cfg.regions, feat_dim), dtype=np.float32), 0)
        store.add(f"img{k}", boxes, feats, feats[0], (640, 480))
    spread = max(0, min(4, cfg.words - 1))
    n = cfg.images * 5
    lengths = g.integers(cfg.words - spread, cfg.words + spread + 1, n)
    tokens = [g.integers(4, cfg.vocab, int(t)).tolist() for t in lengths]
    return PairSet(store.ids, np.repeat(np.arange(cfg.images), 5), tokens, list(range(n)), 0, 0), store


def alignment_steps(cfg: TrainBenchConfig, acfg: AlignConfig, feat_dim: int) -> dict[str, StepMaker]:
    """{"old": ..., "new": ...} step makers of the alignment step with config `acfg` on random pairs, and "bf16"
    (the new path under CPU bf16 autocast, `AlignConfig.cpu_amp`) on a CPU that computes bf16 natively."""
    pairs, store = random_pairs(cfg, feat_dim, np.random.default_rng(cfg.seed))
    tensors = precollate(pairs, store)
    batches = epoch_batches(len(pairs), cfg.batch, 0, cfg.seed)
    device = torch.device("cpu")

    def maker(old: bool, acfg: AlignConfig) -> StepMaker:
        def make():
            torch.manual_seed(cfg.seed)
            model = AlignmentModel(acfg, cfg.vocab, feat_dim).train()
            if old:
                torch_dropout(old_words(model))
            opt = make_optimizer(acfg, model, fused=not old)
            n = [0]

            def step():
                idx = batches[n[0] % len(batches)]
                n[0] += 1
                batch = collate(pairs, idx, store) if old else tensors.batch(idx)
                loss = batch_loss(model, acfg, batch, device, sparse_grad=not old)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                training.clip_gradients(model.parameters(), acfg.grad_clip, "value")
                opt.step()

            real_words = float(np.mean([sum(len(pairs.tokens[i]) for i in b) for b in batches]))
            # WordMax's gathers (the counter does not see them); its bf16 products are counted
            products = WordMax.uses_products(round(real_words), cfg.batch, cfg.regions,
                                             dot_dtype=torch.bfloat16 if acfg.cpu_amp else None)
            extra = 0.0 if old or products or acfg.score != "max" else 4.0 * cfg.batch * real_words * acfg.embed_dim
            return step, cfg.batch, extra

        return make

    plain = replace(acfg, cpu_amp=False)
    makers = {"old": maker(True, plain), "new": maker(False, plain)}
    if training.cpu_has_bf16():
        makers["bf16"] = maker(False, replace(acfg, cpu_amp=True))
    return makers


def old_words(model: AlignmentModel) -> AlignmentModel:
    """`model` made to embed words as the old path did, through every padded position (`embed_words_slow`;
    this instance only). Returns it."""
    model.embed_words = model.embed_words_slow
    return model


def torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every `dvsa.data.dropout.Dropout` replaced by a `torch.nn.Dropout` of the same rate (its
    masks drawn by `bernoulli_`, as before that layer existed). Returns it."""
    for name, child in model.named_children():
        if isinstance(child, Dropout):
            setattr(model, name, torch.nn.Dropout(child.p))
        else:
            torch_dropout(child)
    return model


def counted_flops(step: Callable[[], None]) -> float:
    """Matrix-product FLOPs of one call of `step` (forward and backward), by `torch.utils.flop_counter`."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def _time_interleaved(steps: dict[str, Callable[[], None]], n: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each step, calling them in turn `n` times (after `warmup` untimed calls each):
    the typical step, as a training run's throughput sees it (the best hides what only some steps pay)."""
    times = {k: [] for k in steps}
    for _ in range(warmup):
        for f in steps.values():
            f()
    for _ in range(n):
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _measure(makers: dict[str, StepMaker], steps: int, warmup: int) -> dict[str, tuple[float, int, float, float]]:
    """{path: (seconds, pairs, FLOPs counted, floor FLOPs)} of the steps `makers` build, timed interleaved; the
    floor is the "new" path's FLOPs (the only path's when there is one)."""
    made = {path: make() for path, make in makers.items()}
    flops = {path: counted_flops(f) + extra for path, (f, _, extra) in made.items()}
    secs = _time_interleaved({path: f for path, (f, _, _) in made.items()}, steps, warmup)
    floor = flops.get("new", next(iter(flops.values())))
    return {p: (secs[p], made[p][1], flops[p], floor) for p in made}


def bench_train(cfg: TrainBenchConfig | None = None, shapes: dict[str, tuple[AlignConfig, int]] | None = None,
                others: dict[str, StepMaker | dict[str, StepMaker]] | None = None) -> dict:
    """Time the alignment step (old and new paths) for each named shape {name: (AlignConfig, D)} and every
    other step in `others` {name: StepMaker, or {path: StepMaker} with paths "old" and "new" timed
    interleaved}. Returns a JSON-ready dict: "machine", "matmul_gflops" (mean of before / after, with
    "matmul_gflops_before" / "_after"), "matmul_gflops_bf16" (0 without native bf16) and "rows": {"step", "path",
    "seconds", "pairs_per_s", "gflop" (counted, of this path), "floor_seconds" (from the new path's FLOPs, at the
    bf16 rate on the "bf16" path), "ratio_to_floor"} and, on the rows of a step
    that has an "old" path, "speedup" of the others (old seconds / this path's seconds)."""
    cfg = cfg or TrainBenchConfig()
    shapes = shapes if shapes is not None else {"default": (AlignConfig(), 1280)}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    retained = training.retain_freed_memory() if cfg.retain_memory else False
    load_before = os.getloadavg()
    rate_before = matmul_gflops(cfg.matmul_size)
    bf16 = training.cpu_has_bf16()
    bf16_before = matmul_gflops(cfg.matmul_size, dtype=torch.bfloat16) if bf16 else 0.0
    measured = []  # (step name, {path: (seconds, pairs, gflop counted, floor flop)})
    for name, (acfg, feat_dim) in shapes.items():
        title = (f"alignment {name} (B={cfg.batch}, R={cfg.regions}, ~{cfg.words} words, D={feat_dim}, "
                 f"H={acfg.embed_dim}, K={acfg.hidden_dim})")
        measured.append((title, _measure(alignment_steps(cfg, acfg, feat_dim), cfg.steps, cfg.warmup)))
    for name, makers in (others or {}).items():
        measured.append((name, _measure(makers if isinstance(makers, dict) else {"": makers}, cfg.steps, cfg.warmup)))
    rate_after = matmul_gflops(cfg.matmul_size)
    rate = (rate_before + rate_after) / 2
    rate_bf16 = (bf16_before + matmul_gflops(cfg.matmul_size, dtype=torch.bfloat16)) / 2 if bf16 else 0.0
    rows = []
    for name, paths in measured:
        for path, (sec, pairs, flop, floor_flop) in paths.items():
            floor = floor_flop / ((rate_bf16 if path == "bf16" else rate) * 1e9)
            row = {"step": name, "path": path, "seconds": sec, "pairs_per_s": pairs / sec, "gflop": flop / 1e9,
                   "floor_seconds": floor, "ratio_to_floor": sec / floor}
            if path != "old" and "old" in paths:
                row["speedup"] = paths["old"][0] / sec
            rows.append(row)
    return {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                        "retain_freed_memory": retained, "loadavg_before": list(load_before),
                        "loadavg_after": list(os.getloadavg())},
            "matmul_gflops": rate, "matmul_gflops_before": rate_before, "matmul_gflops_after": rate_after,
            "matmul_gflops_bf16": rate_bf16, "rows": rows}


def format_train_table(res: dict) -> str:
    """The machine line and the table of `bench_train`'s results, as printed by ``dvsa bench train``."""
    m = res["machine"]
    machine = (f"machine: {m['cpus']} CPUs, torch {m['torch']} with {m['torch_threads']} threads; load average "
               f"{m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after; matmul "
               f"{res['matmul_gflops']:.1f} GFLOP/s ({res['matmul_gflops_before']:.1f} / "
               f"{res['matmul_gflops_after']:.1f}); allocator "
               f"{'keeps freed memory' if m.get('retain_freed_memory') else 'default'}")
    if res.get("matmul_gflops_bf16"):
        machine += f"; bf16 matmul {res['matmul_gflops_bf16']:.1f} GFLOP/s"
    lines = [machine, "floor: the new path's matrix-product FLOPs at that rate (the bf16 path's at the bf16 rate); "
                      "x floor = ms / floor ms"]
    head = ("path", "ms/step", "pairs/s", "GFLOP", "floor ms", "x floor", "speedup")
    table = [head]
    for r in res["rows"]:
        table.append((r["path"] or "-", f"{r['seconds'] * 1e3:.1f}", f"{r['pairs_per_s']:.0f}", f"{r['gflop']:.3g}",
                      f"{r['floor_seconds'] * 1e3:.3g}", f"{r['ratio_to_floor']:.2f}",
                      f"{r['speedup']:.2f}x" if "speedup" in r else ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    step = None
    for r, row in zip([None] + res["rows"], table):
        if r is not None and r["step"] != step:
            step = r["step"]
            lines.append(step)
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)
