"""Speed of stage 1 on this machine (``dvsa bench align``).

    res = bench_align(AlignBenchConfig(images=100, sentences=500, train_steps=3))
    print(format_align_table(res))

Measures (1) the machine's matmul rate (GFLOP/s, a large float32 matmul, best of a few, before and after the
scoring: the floor uses their mean, as the load of a shared machine changes); (2) scoring every
image against every sentence (eq. 8, chunked, from embeddings) against the floor set by its multiply-adds at
that rate: 2 * (images * regions) * (real words) * h FLOP; (3) the same scores one image at a time (the loop a
naive implementation would run); (4) training pairs/s (forward + backward + SGD step, batches of 100 pairs,
the default AlignConfig model, eq. 8's gradient by `align.scores.WordMax`; ``dvsa bench train`` compares the
whole step, batches included, with the old path and its FLOP floor). `bench_align` returns the results (a JSON-ready dict), `align_rows` the table's
rows and `format_align_table` the printed table with the load conditions (load average, threads).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from dvsa.align.loss import max_margin_loss
from dvsa.align.model import AlignConfig, AlignmentModel, lengths_mask
from dvsa.align.scores import image_sentence_scores
from dvsa.align.train import make_optimizer


@dataclass
class AlignBenchConfig:
    """Sizes of ``dvsa bench align`` (its flags override these)."""

    images: int = 1000
    sentences: int = 5000
    regions: int = 20
    words: int = 12  # mean words per sentence (lengths 8..16 around it)
    embed: int = 1000  # h
    feat_dim: int = 1280  # D for the training benchmark
    train_steps: int = 5  # training steps to time (0 = skip)
    batch: int = 100  # pairs per training batch
    loop_images: int = 20  # images scored one at a time (extrapolated)
    repeats: int = 1  # scoring runs (best is kept)
    matmul_size: int = 2048  # n of the n x n matmul that measures GFLOP/s
    threads: int = 0  # torch threads (0 = torch's default)


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n x n matmul in `dtype` (float32; bfloat16 on a CPU with native bf16), best of `repeats`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    return 2 * n**3 / _best_time(lambda: a @ b, repeats) / 1e9


def _scoring(cfg: AlignBenchConfig, g: torch.Generator) -> dict:
    """Seconds to score every image against every sentence, batched and one image at a time, and the matmul
    rate measured right after (the load may change during the run)."""
    v = torch.randn(cfg.images, cfg.regions, cfg.embed, generator=g)
    rmask = torch.ones(cfg.images, cfg.regions, dtype=torch.bool)
    spread = max(0, min(4, cfg.words - 1))
    lengths = torch.randint(cfg.words - spread, cfg.words + spread + 1, (cfg.sentences,), generator=g)
    t = int(lengths.max())
    s = torch.randn(cfg.sentences, t, cfg.embed, generator=g)
    wmask = torch.arange(t)[None, :] < lengths[:, None]
    n_loop = min(cfg.loop_images, cfg.images)

    def batched():
        image_sentence_scores(v, rmask, s, wmask)

    def one_at_a_time():
        for i in range(n_loop):
            image_sentence_scores(v[i : i + 1], rmask[i : i + 1], s, wmask)

    with torch.inference_mode():
        seconds = _best_time(batched, cfg.repeats)
        gflops_after = matmul_gflops(cfg.matmul_size)
        loop_s = _best_time(one_at_a_time, 1) * cfg.images / max(1, n_loop)
    return {"words": int(lengths.sum()), "seconds": seconds, "gflops_after": gflops_after, "loop_seconds": loop_s}


def _train_rate(cfg: AlignBenchConfig, g: torch.Generator) -> dict:
    acfg = AlignConfig(embed_dim=cfg.embed)
    model = AlignmentModel(acfg, 3000, cfg.feat_dim).train()
    opt = make_optimizer(acfg, model)
    b = cfg.batch
    feats = torch.randn(b, cfg.regions, cfg.feat_dim, generator=g).relu()
    rmask = torch.ones(b, cfg.regions, dtype=torch.bool)
    lengths = torch.randint(max(1, cfg.words - 4), cfg.words + 5, (b,), generator=g)
    tokens = torch.randint(4, 3000, (b, int(lengths.max())), generator=g) * lengths_mask(lengths, int(lengths.max()))

    def step():
        v, s = model(feats, tokens, lengths)
        loss = max_margin_loss(image_sentence_scores(v, rmask, s, tokens > 0))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), acfg.grad_clip)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(cfg.train_steps):
        step()
    sec = (time.perf_counter() - t0) / cfg.train_steps
    return {"batch": b, "embed": acfg.embed_dim, "hidden": acfg.hidden_dim, "feat_dim": cfg.feat_dim,
            "seconds_per_step": sec, "pairs_per_s": b / sec}


def bench_align(cfg: AlignBenchConfig | None = None) -> dict:
    """Run the benchmark; the results as a JSON-ready dict: "machine", "matmul_gflops" (mean of before / after)
    with "matmul_gflops_before" / "_after", "scoring" (sizes, "gflop", "seconds", "floor_seconds",
    "ratio_to_floor", "one_image_at_a_time_seconds") and "train" ({} when `train_steps` is 0)."""
    cfg = cfg or AlignBenchConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    g = torch.Generator().manual_seed(0)
    load_before = os.getloadavg()
    gflops = matmul_gflops(cfg.matmul_size)
    sc = _scoring(cfg, g)
    flop = 2.0 * cfg.images * cfg.regions * sc["words"] * cfg.embed
    rate = (gflops + sc["gflops_after"]) / 2
    floor_s = flop / (rate * 1e9)
    train = _train_rate(cfg, g) if cfg.train_steps > 0 else {}
    load_after = os.getloadavg()
    return {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "loadavg_before": list(load_before), "loadavg_after": list(load_after)},
        "matmul_gflops": rate,
        "matmul_gflops_before": gflops,
        "matmul_gflops_after": sc["gflops_after"],
        "scoring": {"images": cfg.images, "regions": cfg.regions, "sentences": cfg.sentences,
                    "words": sc["words"], "embed": cfg.embed, "gflop": flop / 1e9, "seconds": sc["seconds"],
                    "floor_seconds": floor_s, "ratio_to_floor": sc["seconds"] / floor_s,
                    "one_image_at_a_time_seconds": sc["loop_seconds"]},
        "train": train,
    }


def align_rows(res: dict) -> list[dict]:
    """The table's rows ({"what", "value"}, both text) from `bench_align`'s results."""
    sc, tr = res["scoring"], res["train"]
    rows = [("matmul rate (mean of before / after)",
             f"{res['matmul_gflops']:.1f} GFLOP/s ({res['matmul_gflops_before']:.1f} / {res['matmul_gflops_after']:.1f})"),
            (f"scoring {sc['images']} x {sc['sentences']} ({sc['regions']} regions, {sc['words']} words, h={sc['embed']})",
             f"{sc['seconds']:.2f} s"),
            ("  floor (multiply-adds at the matmul rate)", f"{sc['floor_seconds']:.2f} s  ({sc['gflop']:.0f} GFLOP)"),
            ("  ratio to floor", f"{sc['ratio_to_floor']:.2f}x"),
            ("  one image at a time (extrapolated)", f"{sc['one_image_at_a_time_seconds']:.2f} s")]
    if tr:
        rows.append((f"training (batch {tr['batch']}, h={tr['embed']}, D={tr['feat_dim']})",
                     f"{tr['pairs_per_s']:.0f} pairs/s ({tr['seconds_per_step'] * 1000:.0f} ms/step)"))
    return [{"what": a, "value": b} for a, b in rows]


def format_align_table(res: dict) -> str:
    """The machine line and the table of `bench_align`'s results, as printed by ``dvsa bench align``."""
    m = res["machine"]
    lines = [f"machine: {m['cpus']} CPUs, torch {m['torch']} with {m['torch_threads']} threads; "
             f"load average {m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after"]
    rows = align_rows(res)
    w = max(len(r["what"]) for r in rows)
    lines += [f"{r['what']:<{w}}  {r['value']}" for r in rows]
    return "\n".join(lines)
