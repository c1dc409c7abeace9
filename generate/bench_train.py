"""The generators' training step for ``dvsa bench train``, and the alignment sizes it times (the measuring
itself is `dvsa.align.bench_train`; this module lives in generate/ because it needs the generators and the demo's
config, which align/ does not import)."""
from __future__ import annotations

from dataclasses import replace

import torch
from dvsa.align.bench_train import StepMaker, TrainBenchConfig, torch_dropout
from dvsa.align.model import AlignConfig
from dvsa.data import training
from dvsa.data.text import END_ID, START_ID
from dvsa.generate.model import CaptionModel, GenConfig, caption_loss
from dvsa.generate.pipeline import DemoConfig, PipelineConfig
from dvsa.generate.train import clip_gradients, make_optimizer

SHAPES = ("paper", "default", "pipeline", "demo")


def alignment_shapes(cfg: TrainBenchConfig, names) -> dict[str, tuple[AlignConfig, int]]:
    """{name: (AlignConfig, D)} of the named sizes (see the module doc)."""
    table = {"paper": (AlignConfig(), cfg.paper_feat_dim), "default": (AlignConfig(), cfg.feat_dim),
             "pipeline": (AlignConfig(**PipelineConfig().align), cfg.feat_dim),
             "demo": (AlignConfig(**DemoConfig().align), cfg.feat_dim)}
    return {n: table[n] for n in names}


def generator_steps(cfg: TrainBenchConfig, gcfg: GenConfig, feat_dim: int) -> dict[str, StepMaker]:
    """{"old": ..., "new": ...} makers of the generator's training step (teacher forcing, cross-entropy,
    backward, clipping, optimiser) on random features and sentences of `cfg.batch` pairs: "old" computes the
    output layer at every padded position with `torch.nn.Dropout`'s masks, "new" (`train_generator`'s) at the
    real targets only with `dvsa.data.dropout.Dropout`'s."""
    plain = replace(gcfg, cpu_amp=False)
    makers = {"old": generator_step(cfg, plain, feat_dim, padded=True), "new": generator_step(cfg, plain, feat_dim)}
    if training.cpu_has_bf16():  # the new path with the forward under CPU bf16 autocast (GenConfig.cpu_amp)
        makers["bf16"] = generator_step(cfg, replace(gcfg, cpu_amp=True), feat_dim)
    return makers


def generator_step(cfg: TrainBenchConfig, gcfg: GenConfig, feat_dim: int, padded: bool = False) -> StepMaker:
    """A maker of the generator's training step on random inputs (see `generator_steps`); `padded`: the output
    layer over every position and torch.nn.Dropout's masks."""

    def make():
        g = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = CaptionModel(gcfg, cfg.vocab, feat_dim).train()
        if padded:
            torch_dropout(model)
        opt = make_optimizer(gcfg, model.parameters())
        params = [p for p in model.parameters() if p.requires_grad]
        spread = max(0, min(4, cfg.words - 1))
        lengths = torch.randint(cfg.words - spread, cfg.words + spread + 1, (cfg.batch,), generator=g)
        t = int(lengths.max()) + 1
        words = torch.randint(4, cfg.vocab, (cfg.batch, t), generator=g)
        pos = torch.arange(t)[None, :]
        inp = torch.where(pos == 0, START_ID, torch.where(pos <= lengths[:, None], words.roll(1, 1), 0))
        tgt = torch.where(pos < lengths[:, None], words, torch.where(pos == lengths[:, None], END_ID, 0))
        feats = torch.randn(cfg.batch, model.input_dim, generator=g).relu()
        device = torch.device("cpu")

        def step():
            with training.autocast(device, gcfg.amp, gcfg.cpu_amp):
                logits = model(feats, inp, targets=None if padded else tgt)
            loss = caption_loss(logits.float(), tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(gcfg, params)
            opt.step()

        return step, cfg.batch, 0.0

    return make
