"""Captions per second of beam search, batched over images vs one image at a time (``dvsa bench decode``).

    rows = bench_decode(DecodeBenchConfig(images=64, beams=(1, 3, 7)))
    print(format_decode_table(rows, cfg))

An untrained `CaptionModel` of the default size (GenConfig: hidden 512, embed 512) with a Flickr8k-sized
vocabulary decodes random features; untrained captions rarely end early, so nearly every caption runs the full
`max_len` steps (the slow case). Columns: the batched `beam_search` on all images at once; the same function
called on one image at a time; and the plain-Python twin `beam_search_single` (one hypothesis per model step)
on a few images. Timings on a shared CPU vary from run to run; compare columns of one run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from dvsa.generate.decode import beam_search, beam_search_single
from dvsa.generate.model import CaptionModel, GenConfig

_GEN = GenConfig()


@dataclass
class DecodeBenchConfig:
    """Sizes of ``dvsa bench decode`` (its flags override these); the model's defaults are GenConfig's."""

    images: int = 64  # images decoded per measurement
    beams: list[int] = field(default_factory=lambda: [1, 3, 7])
    vocab: int = 2538  # vocabulary size (Flickr8k: 2538)
    feat_dim: int = 1280  # feature size D (EfficientNet-Lite0: 1280)
    hidden: int = _GEN.hidden
    embed: int = _GEN.embed
    cell: str = _GEN.cell  # "rnn" | "lstm"
    max_len: int = _GEN.max_len
    single_images: int = 4  # images for the plain-Python twin (0 skips it)
    repeat: int = 2  # best of this many runs
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: torch's)


def _rate(fn, n_images: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def bench_decode(cfg: DecodeBenchConfig | None = None) -> list[dict]:
    """One row per beam size: {"beam", "batched", "one_by_one", "speedup", "twin"} (images/s; "twin" is nan
    when `single_images` is 0)."""
    cfg = cfg or DecodeBenchConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    dev = torch.device(cfg.device)
    gcfg = GenConfig(cell=cfg.cell, hidden=cfg.hidden, embed=cfg.embed, dropout=0.0)
    model = CaptionModel(gcfg, cfg.vocab, cfg.feat_dim).to(dev).eval()
    feats = torch.randn(cfg.images, cfg.feat_dim, device=dev).abs()  # CNN features are >= 0 (ReLU / swish)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def rate(fn, n_images: int, repeat: int) -> float:
        def run():
            fn()
            sync()
        return _rate(run, n_images, repeat)

    rows = []
    n1 = min(cfg.single_images, cfg.images)
    for k in cfg.beams:
        beam_search(model, feats[:2], k, cfg.max_len)  # warm-up

        def batched(k=k):
            beam_search(model, feats, k, cfg.max_len)

        def one_by_one(k=k):
            for i in range(len(feats)):
                beam_search(model, feats[i : i + 1], k, cfg.max_len)

        def twin(k=k):
            for i in range(n1):
                beam_search_single(model, feats[i], k, cfg.max_len)

        b = rate(batched, cfg.images, cfg.repeat)
        one = rate(one_by_one, cfg.images, cfg.repeat)
        tw = rate(twin, n1, 1) if n1 else float("nan")
        rows.append({"beam": k, "batched": b, "one_by_one": one, "speedup": b / one, "twin": tw})
    return rows


def format_decode_table(rows: list[dict], cfg: DecodeBenchConfig | None = None) -> str:
    """The header line (sizes, device, threads) and the table of `bench_decode`'s rows."""
    cfg = cfg or DecodeBenchConfig()
    lines = [f"decode benchmark: {cfg.cell}, hidden {cfg.hidden}, vocab {cfg.vocab}, D {cfg.feat_dim}, "
             f"max_len {cfg.max_len}, {cfg.images} images, device {torch.device(cfg.device)}, "
             f"torch threads {torch.get_num_threads()}"]
    head = (f"{'beam':>4} | {'batched img/s':>13} | {'one-by-one img/s':>16} | {'speed-up':>8} | "
            f"{'python twin img/s':>17}")
    lines += [head, "-" * len(head)]
    lines += [f"{r['beam']:>4} | {r['batched']:>13.1f} | {r['one_by_one']:>16.1f} | {r['speedup']:>7.1f}x | "
              f"{r['twin']:>17.1f}" for r in rows]
    return "\n".join(lines)
