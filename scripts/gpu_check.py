"""`make gpu-check` (``python -m dvsa.scripts.gpu_check``): the GPU paths of every trainer, against the CPU.

Each stage (the aligner, the full-frame generator, the region generator) trains for a few steps on a small
random toy written to a temporary FeatureStore: once in fp32 on the CPU, once on the GPU in fp32 and once on the
GPU with bf16 autocast (AMP), all from the same seed. Dropout is off, so the three runs compute the same function
(dropout masks come from different RNGs on the CPU and the GPU) and only rounding separates them. The check is
the largest relative difference of the per-epoch mean losses:

- GPU fp32 vs CPU: relative 1e-3 (summation order, cuDNN's TF32 in the LSTM; a fault such as a wrong device, a
  dropped batch or a different schedule moves the loss by far more);
- GPU AMP (bf16 forward, fp32 reductions) vs CPU: relative 2e-2 (bf16 keeps 8 bits of mantissa, about 4e-3 per
  rounding; a few steps of training compound that to about 1e-2 on these toys; a reduction left in bf16 or a
  loss computed from bf16 sums typically misses by more).

With 2 or more GPUs each stage also trains with 2 processes through ``torchrun`` (DDP, nccl) and is compared to
the single-GPU AMP run (relative 2e-2); with fewer a line says it is skipped. A table is printed (stage, device,
amp, steps, loss CPU, loss GPU, rel diff, ok); the exit status is 1 when a row is not ok. Without CUDA one line
says a GPU is needed, and the exit status is 0. A run takes well under a minute on one H100.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from dvsa.align.model import AlignConfig
from dvsa.align.train import train_alignment
from dvsa.data.checkpoint import load_checkpoint
from dvsa.data.distributed import cleanup, is_main
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.io import atomic_write_json
from dvsa.data.records import ImageRecord, Sentence
from dvsa.generate.model import GenConfig
from dvsa.generate.train import train_generator

STAGES = ("align", "generate", "generate-regions")
RTOL_FP32 = 1e-3
RTOL_AMP = 2e-2
N_OBJ, DIM, N_IMAGES, EPOCHS = 12, 16, 40, 2
NEEDS_GPU = "gpu-check needs a CUDA GPU (torch sees none): nothing to check on this machine"


# ---------------------------------------------------------------- the toy
def toy(seed: int = 0, n_images: int = N_IMAGES) -> tuple[list[ImageRecord], list[tuple], list[dict]]:
    """(records, store rows (id, boxes, regions, image feature), snippets): images of 3 objects whose region
    features are noisy codes of the objects' words; 2 sentences per image name them; one snippet per image
    names the object of region 1. A pure function of `seed` (the torchrun workers rebuild the records)."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(N_OBJ, DIM)).astype(np.float32)
    records, rows, snippets = [], [], []
    for k in range(n_images):
        objs = rng.choice(N_OBJ, 3, replace=False)
        regions = codes[objs] + 0.3 * rng.normal(size=(3, DIM)).astype(np.float32)
        whole = regions.mean(0, keepdims=True)
        boxes = np.array([[0, 0, 64, 64]] + [[i * 10, 0, i * 10 + 20, 20] for i in range(3)], np.float32)
        image_id = f"img{k}"
        rows.append((image_id, boxes, np.concatenate([whole, regions]), whole[0]))
        sents = []
        for j in range(2):
            words = ["a"] + [f"w{o}" for o in rng.permutation(objs)]
            sents.append(Sentence(2 * k + j, " ".join(words), words))
        records.append(ImageRecord(image_id, f"{image_id}.png", 64, 64, "train", sents))
        snippets.append({"image_id": image_id, "sentence_id": 2 * k, "start": 0, "end": 2,
                         "text": f"a w{objs[0]}", "region": 1, "box": boxes[1].tolist(), "score": 1.0})
    return records, rows, snippets


def write_toy(root: Path, seed: int = 0) -> list[ImageRecord]:
    """The toy's store (root/store) and snippets (root/snippets.jsonl); returns its records."""
    records, rows, snippets = toy(seed)
    with FeatureStoreWriter(root / "store", {"dim": DIM, "producer": "gpu_check"}, part_size=64) as w:
        for image_id, boxes, regions, whole in rows:
            w.add(image_id, boxes, regions, whole, (64, 64))
    (root / "snippets.jsonl").write_text("".join(json.dumps(s) + "\n" for s in snippets))
    return records


# ---------------------------------------------------------------- one training
def train_stage(stage: str, root: Path, records: list[ImageRecord], device: str, amp: bool, out: Path) -> dict:
    """Train `stage` on the toy at `root` on `device`; returns {"losses": per-epoch mean losses, "steps"}."""
    quiet = dict(progress=False, log=lambda *a, **k: None)
    store = FeatureStore(root / "store")
    if stage == "align":
        cfg = AlignConfig(embed_dim=32, hidden_dim=24, word_dim=16, dropout=0.0, min_count=1, batch_size=20,
                          epochs=EPOCHS, lr=0.003, lr_schedule="none", patience=0, val_images=0, amp=amp)
        summary = train_alignment(records, store, out, cfg, device=device, **quiet)
        history = summary["history"]
        steps = sum(h["steps"] for h in history)
    else:
        cfg = GenConfig(hidden=32, embed=16, min_count=1, batch_size=16, lr=0.01, dropout=0.0, patience=0,
                        val_images=0, epochs=EPOCHS, device=device, amp=amp,
                        input="region" if stage == "generate-regions" else "image")
        data = root / "snippets.jsonl" if stage == "generate-regions" else records
        train_generator(cfg, store, data, out, records=records if stage == "generate-regions" else None, **quiet)
        ck = load_checkpoint(out / "last.pt", kind="generate")
        history, steps = ck["history"], int(ck["step"])
    return {"losses": [float(h["loss"]) for h in history], "steps": steps}


def rel_diff(a: list[float], b: list[float]) -> float:
    """The largest |a - b| / max(|a|, 1e-12) over the epochs (inf when the lengths differ or a value is not finite)."""
    if len(a) != len(b) or not a:
        return float("inf")
    d = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
    return d if np.isfinite(d) else float("inf")


def compare(stage: str, device: str, amp: bool, ref: dict, got: dict, rtol: float) -> dict:
    """One table row: `got` (on `device`) against the reference run `ref` (fp32 CPU, or single GPU for DDP)."""
    rel = rel_diff(ref["losses"], got["losses"])
    return {"stage": stage, "device": device, "amp": amp, "steps": got["steps"], "loss_cpu": ref["losses"][-1],
            "loss_gpu": got["losses"][-1], "rel_diff": rel, "ok": rel <= rtol and ref["steps"] == got["steps"]}


def format_table(rows: list[dict]) -> str:
    head = f"{'stage':<17} {'device':<9} {'amp':<5} {'steps':>5} {'loss CPU':>11} {'loss GPU':>11} {'rel diff':>9}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['stage']:<17} {r['device']:<9} {str(r['amp']):<5} {r['steps']:>5} {r['loss_cpu']:>11.6f} "
                     f"{r['loss_gpu']:>11.6f} {r['rel_diff']:>9.2e}  {'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)


# ---------------------------------------------------------------- DDP through torchrun
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(stage: str, root: Path, out: Path, nproc: int = 2, timeout: float = 240, device: str = "cuda") -> dict:
    """Train `stage` with `nproc` processes on `nproc` GPUs (torchrun, AMP; `device` "cpu" runs the same
    machinery with gloo); returns what rank 0 wrote."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "dvsa.scripts.gpu_check", "--worker", stage, "--root", str(root),
           "--out", str(out), "--device", device]
    subprocess.run(cmd, check=True, timeout=timeout)
    return json.loads((out / "result.json").read_text())


def _worker(stage: str, root: Path, out: Path, device: str = "cuda") -> int:
    records, _, _ = toy()
    try:
        result = train_stage(stage, root, records, device, True, out)  # "cuda" = cuda:LOCAL_RANK
        if is_main():
            atomic_write_json(out / "result.json", result)
    finally:
        cleanup()
    return 0


# ---------------------------------------------------------------- the command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa.scripts.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a torchrun process of run_ddp
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args.worker, Path(args.root), Path(args.out), args.device)
    if not torch.cuda.is_available():
        print(NEEDS_GPU)
        return 0
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    torch.set_num_threads(min(4, torch.get_num_threads()))
    rows = []
    n_gpus = torch.cuda.device_count()
    with tempfile.TemporaryDirectory(prefix="dvsa-gpu-check-") as tmp:
        root = Path(tmp)
        records = write_toy(root)
        for stage in stages:
            cpu = train_stage(stage, root, records, "cpu", False, root / f"{stage}-cpu")
            gpu32 = train_stage(stage, root, records, "cuda", False, root / f"{stage}-cuda-fp32")
            rows.append(compare(stage, "cuda", False, cpu, gpu32, RTOL_FP32))
            amp = train_stage(stage, root, records, "cuda", True, root / f"{stage}-cuda-amp")
            rows.append(compare(stage, "cuda", True, cpu, amp, RTOL_AMP))
            if n_gpus >= 2:
                ddp = run_ddp(stage, root, root / f"{stage}-ddp")
                row = compare(stage, "2x cuda", True, amp, ddp, RTOL_AMP)
                row["loss_cpu"] = cpu["losses"][-1]  # the table's CPU column stays the CPU run
                rows.append(row)
    print(format_table(rows))
    print(f"tolerances: relative {RTOL_FP32:g} for GPU fp32, {RTOL_AMP:g} for bf16 AMP and for DDP "
          "(DDP is compared to the single-GPU AMP run)")
    if n_gpus < 2:
        print(f"DDP over 2 GPUs skipped: {n_gpus} GPU(s) visible")
    bad = [r for r in rows if not r["ok"]]
    if bad:
        print(f"gpu-check FAILED: {len(bad)} of {len(rows)} rows outside their tolerance")
        return 1
    print(f"gpu-check ok: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
