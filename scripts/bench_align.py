"""``dvsa bench align``: speed of stage 1 on this machine.

    dvsa bench align                       # 1,000 images x 5,000 sentences, 20 regions, ~12 words, h = 1000
    dvsa bench align --images 100 --sentences 500 --train-steps 3 --out bench.json

Measures (1) the machine's matmul rate (GFLOP/s, a large float32 matmul, best of a few, before and after the
scoring: the floor uses their mean, as the load of a shared machine changes); (2) scoring every
image against every sentence (eq. 8, chunked, from embeddings) against the floor set by its multiply-adds at
that rate: 2 * (images * regions) * (real words) * h FLOP; (3) the same scores one image at a time (the loop a
naive implementation would run); (4) training pairs/s (forward + backward + SGD step, batches of 100 pairs,
the default AlignConfig model). Prints a table with the load conditions (load average, threads) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from dvsa.align.loss import max_margin_loss
from dvsa.align.model import AlignConfig, AlignmentModel, lengths_mask
from dvsa.align.scores import image_sentence_scores
from dvsa.align.train import make_optimizer


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    return 2 * n**3 / _best_time(lambda: a @ b, repeats) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa bench align", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--sentences", type=int, default=5000)
    p.add_argument("--regions", type=int, default=20)
    p.add_argument("--words", type=int, default=12, help="mean words per sentence (lengths 8..16 around it)")
    p.add_argument("--embed", type=int, default=1000, help="h")
    p.add_argument("--feat-dim", type=int, default=1280, help="D for the training benchmark")
    p.add_argument("--train-steps", type=int, default=5, help="training steps to time (0 = skip)")
    p.add_argument("--batch", type=int, default=100, help="pairs per training batch")
    p.add_argument("--loop-images", type=int, default=20, help="images scored one at a time (extrapolated)")
    p.add_argument("--repeats", type=int, default=1, help="scoring runs (best is kept)")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n matmul that measures GFLOP/s")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=None, help="results JSON")
    args = p.parse_args(argv)


    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    load_before = os.getloadavg()
    gflops = matmul_gflops(args.matmul_size)

    # (2) scoring, from embeddings
    v = torch.randn(args.images, args.regions, args.embed, generator=g)
    rmask = torch.ones(args.images, args.regions, dtype=torch.bool)
    spread = max(0, min(4, args.words - 1))
    lengths = torch.randint(args.words - spread, args.words + spread + 1, (args.sentences,), generator=g)
    t = int(lengths.max())
    s = torch.randn(args.sentences, t, args.embed, generator=g)
    wmask = torch.arange(t)[None, :] < lengths[:, None]
    flop = 2.0 * args.images * args.regions * int(lengths.sum()) * args.embed
    with torch.inference_mode():
        score_s = _best_time(lambda: image_sentence_scores(v, rmask, s, wmask), args.repeats)
        gflops_after = matmul_gflops(args.matmul_size)  # the load may change during the run
        n_loop = min(args.loop_images, args.images)
        loop_s = _best_time(lambda: [image_sentence_scores(v[i : i + 1], rmask[i : i + 1], s, wmask)
                                     for i in range(n_loop)], 1) * args.images / max(1, n_loop)
    rate = (gflops + gflops_after) / 2
    floor_s = flop / (rate * 1e9)
    del s, v

    # (4) training pairs/s with the default model
    train = {}
    if args.train_steps > 0:
        train = _train_rate(args, g)
    load_after = os.getloadavg()

    res = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "loadavg_before": list(load_before), "loadavg_after": list(load_after)},
        "matmul_gflops": rate,
        "matmul_gflops_before": gflops,
        "matmul_gflops_after": gflops_after,
        "scoring": {"images": args.images, "regions": args.regions, "sentences": args.sentences,
                    "words": int(lengths.sum()), "embed": args.embed, "gflop": flop / 1e9, "seconds": score_s,
                    "floor_seconds": floor_s, "ratio_to_floor": score_s / floor_s,
                    "one_image_at_a_time_seconds": loop_s},
        "train": train,
    }
    _print(res)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


def _train_rate(args, g) -> dict:
    cfg = AlignConfig(embed_dim=args.embed)
    model = AlignmentModel(cfg, 3000, args.feat_dim).train()
    opt = make_optimizer(cfg, model)
    b = args.batch
    feats = torch.randn(b, args.regions, args.feat_dim, generator=g).relu()
    rmask = torch.ones(b, args.regions, dtype=torch.bool)
    lengths = torch.randint(max(1, args.words - 4), args.words + 5, (b,), generator=g)
    tokens = torch.randint(4, 3000, (b, int(lengths.max())), generator=g) * lengths_mask(lengths, int(lengths.max()))

    def step():
        v, s = model(feats, tokens, lengths)
        loss = max_margin_loss(image_sentence_scores(v, rmask, s, tokens > 0))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    sec = (time.perf_counter() - t0) / args.train_steps
    return {"batch": b, "embed": cfg.embed_dim, "hidden": cfg.hidden_dim, "feat_dim": args.feat_dim,
            "seconds_per_step": sec, "pairs_per_s": b / sec}


def _print(res: dict) -> None:
    m, sc, tr = res["machine"], res["scoring"], res["train"]
    print(f"machine: {m['cpus']} CPUs, torch {m['torch']} with {m['torch_threads']} threads; "
          f"load average {m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after")
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
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{w}}  {b}")


if __name__ == "__main__":
    sys.exit(main())
