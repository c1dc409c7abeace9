"""The demo: the whole pipeline on freshly generated synthetic scenes, on the CPU, in minutes.

`run_demo` writes the scenes (`data.synthetic.write_synthetic`, its defaults) into OUT/data and runs the pipeline
on them with the offline backbone (selective search + EfficientNet-Lite0, backend "rcnn") and the small stage
sizes of `DemoConfig`. Run it again and every finished stage is reused.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dvsa.data.io import atomic_write_json
from dvsa.data.overrides import parse_set
from dvsa.data.synthetic import SynthConfig, write_synthetic
from dvsa.generate.pipeline.config import PipelineConfig, apply_overrides, set_targets
from dvsa.generate.pipeline.runner import run_pipeline


@dataclass
class DemoConfig:
    """The demo's sizes: the whole run takes under 10 minutes on a 2-core CPU (README). The only home of them."""

    # overrides of write_synthetic's keyword arguments: 1,600 train scenes (the default is 400), and 250 val and
    # 250 test scenes: on 50, one run's word accuracy has a bootstrap standard error of 2.5 points (README)
    synthetic: dict = field(default_factory=lambda: {"n_train": 1600, "n_val": 250, "n_test": 250})
    # fast selective search; the proposals ranked by ImageNet entropy on RoIAlign features of the one whole-image
    # pass, the kept boxes warped through the CNN. Scoring every proposal warped (R-CNN) instead put 0.912 of the
    # test words on their box against 0.903 here, but its features took 765 s against 155 s, both while other jobs
    # shared the CPU (docs/experiments.md)
    # The synthetic scenes keep the box recipe they were tuned with: entropy ranking, no candidate grid
    # (RegionConfig's learned box head and grid are fitted to real photos' boxes)
    region: dict = field(default_factory=lambda: {"backend": "rcnn", "backbone": "efficientnet_lite0",
                                                  "ss_mode": "fast", "score_pooling": "roialign",
                                                  "objectness": "entropy", "grid_levels": 0})
    # Adam, box geometry (with 16 bumps per coordinate) and whole-image dropout; embedding 512, BRNN 256, word
    # vectors 128; 20 epochs over the 1,600 scenes, the learning rate divided by 10 for the last 4. The recipe grew
    # at 30 epochs of a constant rate (docs/experiments.md); 20 with the last 4 slower ground as many val words
    # (0.862 against 0.866, the box weights' val rows; 0.861 with bf16) in two thirds of the time
    align: dict = field(default_factory=lambda: {"embed_dim": 512, "hidden_dim": 256, "word_dim": 128,
                                                 "score_norm": "words", "optimizer": "adam", "lr": 5e-4,
                                                 "dropout": 0.2, "geometry": True, "geometry_bins": 16,
                                                 "whole_image_drop": 0.5, "batch_size": 100, "epochs": 20,
                                                 "lr_schedule": "step", "lr_step": 16, "lr_gamma": 0.1,
                                                 "patience": 0, "cpu_amp": True})
    # every trainer's forward in bf16 on a CPU that computes it natively, as in PipelineConfig
    gen: dict = field(default_factory=lambda: {"hidden": 256, "embed": 256, "epochs": 20, "cpu_amp": True})
    # the MRF gives ~4 snippets per sentence, so 8 epochs on them are about as many steps as 32 on full frames
    gen_region: dict = field(default_factory=lambda: {"hidden": 256, "embed": 256, "epochs": 8,
                                                      "input": "region+image", "cpu_amp": True})
    # the learned box score leaves the whole image out (BoxScoreConfig.whole_image), and its weight is one of
    # these, as when the recipe was tuned
    box_score: dict = field(default_factory=lambda: {"whole_image": False})
    box_weights: tuple = (0.25, 0.5, 1.0)
    beams: tuple = (1, 7)
    report_beam: int = 7  # the demo's recipe is pinned (the Flickr8k pipeline reports beam 15)
    # beta calibrated on 500 train sentences to a mean snippet of 5 words: on the 250 val scenes the aligners of
    # this recipe ground the most words at beta 10-12 (snippets of 4.8-5.1 words), 0.6-1.1 points more than at
    # the 4-word beta
    snippets: dict = field(default_factory=lambda: {"calib_sentences": 500, "target_len": 5.0})
    dense_images: int = 6
    show_images: int = 6

    def pipeline_config(self, out: Path, device: str = PipelineConfig.device) -> PipelineConfig:
        return PipelineConfig(
            dataset="synthetic", root=str(out / "data"), out=str(out), eval_split="test", device=device,
            word_vectors=None,
            region=copy.deepcopy(self.region), align=copy.deepcopy(self.align), gen=copy.deepcopy(self.gen),
            gen_region=copy.deepcopy(self.gen_region), snippets=copy.deepcopy(self.snippets),
            box_score=copy.deepcopy(self.box_score), box_weights=self.box_weights, beams=self.beams,
            report_beam=self.report_beam, dense_images=self.dense_images, show_images=self.show_images)


def make_data(out: Path, overrides: dict, log=print) -> float:
    """Write the synthetic scenes into `out` (write_synthetic leaves a complete set of the same config alone)."""
    t0 = time.perf_counter()
    write_synthetic(str(out), **overrides)
    seconds = time.perf_counter() - t0
    log(f"[data] synthetic scenes in {out} ({seconds:.1f} s)")
    return seconds


def demo_set_targets() -> dict[str, type]:
    """What ``dvsa demo --set`` reaches: ``synthetic.KEY`` (a `data.synthetic.SynthConfig` field, the scenes
    written) and everything ``dvsa pipeline --set`` reaches (`config.set_targets`)."""
    return {**set_targets(), "synthetic": SynthConfig}


def run_demo(demo: DemoConfig, out: str | Path, device: str = PipelineConfig.device,
             overrides: list[str] = (), log=print) -> tuple[dict, float]:
    """The demo: the synthetic scenes of `demo` into OUT/data, then the pipeline on them into OUT, and
    OUT/demo_config.json. `overrides` are ``--set`` items: ``synthetic.KEY=VALUE`` changes the scenes, the rest
    the pipeline (`apply_overrides`); all are checked (ConfigError) before anything is written. Returns
    (results.json's content plus ``_ran``, seconds spent writing the scenes)."""
    out = Path(out)
    items = list(overrides)
    scenes = [i for i in items if i.split("=", 1)[0].startswith("synthetic.")]
    rest = [i for i in items if i not in scenes]
    demo = copy.deepcopy(demo)
    demo.synthetic.update(parse_set(scenes, {"synthetic": SynthConfig})["synthetic"])
    cfg = apply_overrides(demo.pipeline_config(out, device), rest)
    data_s = make_data(out / "data", demo.synthetic, log=log)
    results = run_pipeline(cfg, log=log)
    atomic_write_json(out / "demo_config.json", asdict(demo))
    return results, data_s
