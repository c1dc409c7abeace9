"""The whole two-stage system as one cached, resumable pipeline (``dvsa pipeline``, ``dvsa demo``, ``dvsa report``).

config.py   PipelineConfig, ``--config`` overrides (apply_overrides, parse_value), ConfigError, dataclass_with
run.py      Run (what the stages share) and the applies checks (has_region_text, has_phrases)
align_stages.py / generate_stages.py   the stage bodies of stage 1 and stage 2
stages.py   Stage and STAGES (order, config keys, inputs and outputs of every stage)
results.py  assemble_results (results.json)
report.py   the HTML report (write_report, build_html, rebuild_report)
runner.py   the caching Runner (done files, fingerprints), StageError, run_pipeline
beside.py   a stage in a second process beside the main line (gen_full beside align_train, PipelineConfig.parallel)
demo.py     DemoConfig, make_data, run_demo
"""
from dvsa.generate.pipeline.config import (
           ConfigError,
           PipelineConfig,
           apply_overrides,
           dataclass_with,
           parse_value,
)
from dvsa.generate.pipeline.demo import DemoConfig, make_data, run_demo
from dvsa.generate.pipeline.report import build_html, rebuild_report, write_report
from dvsa.generate.pipeline.results import assemble_results
from dvsa.generate.pipeline.run import Run, has_phrases, has_region_text
from dvsa.generate.pipeline.runner import Runner, StageError, fingerprint, run_pipeline
from dvsa.generate.pipeline.stages import STAGES, Stage

__all__ = ["ConfigError", "DemoConfig", "PipelineConfig", "Run", "Runner", "STAGES", "Stage", "StageError",
           "apply_overrides", "assemble_results", "build_html", "dataclass_with", "fingerprint", "has_phrases",
           "has_region_text", "make_data", "parse_value", "rebuild_report", "run_demo", "run_pipeline",
           "write_report"]
